//! The systemd unit passes `systemd-analyze verify`, and the install script is idempotent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn unit_verifies() {
    let unit = std::fs::read_to_string(repo().join("systemd/tollgate.service")).unwrap();
    assert!(unit.contains("Type=forking") && unit.contains("PIDFile=/run/tollgate/tollgate.pid"));
    // The -u start must come before the SIGQUIT that makes the old process hand over.
    let upgrade = unit
        .find("ExecReload=/usr/local/bin/tollgate -u -d")
        .unwrap();
    let quit = unit.find("ExecReload=/bin/kill -QUIT $MAINPID").unwrap();
    assert!(upgrade < quit);
    // The shipped systemd config agrees with the unit.
    let conf = std::fs::read_to_string(repo().join("conf/systemd.yaml")).unwrap();
    assert!(conf.contains("pid_file: /run/tollgate/tollgate.pid"));
    assert!(conf.contains("upgrade_sock: /run/tollgate/upgrade.sock"));

    // verify checks that executables exist: point the unit at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/tollgate", env!("CARGO_BIN_EXE_tollgate")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("tollgate.service:"),
        "warnings about the unit: {text}"
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn install_script_is_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::new("bash")
            .arg(repo().join("systemd/install.sh"))
            .arg(env!("CARGO_BIN_EXE_tollgate"))
            .env("ROOT", root.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run();
    let r = root.path();
    assert!(mode(&r.join("usr/local/bin/tollgate")) & 0o111 != 0);
    assert_eq!(mode(&r.join("etc/tollgate/env")), 0o600);
    assert_eq!(mode(&r.join("etc/tollgate")), 0o750);
    assert!(r.join("etc/systemd/system/tollgate.service").is_file());
    let conf = r.join("etc/tollgate/tollgate.yaml");
    let ok = Command::new(r.join("usr/local/bin/tollgate"))
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .status()
        .unwrap();
    assert!(ok.success(), "installed config validates");

    // Operator edits survive a second run.
    std::fs::write(
        &conf,
        std::fs::read_to_string(&conf).unwrap() + "\n# edited\n",
    )
    .unwrap();
    std::fs::write(r.join("etc/tollgate/env"), "OPENAI_API_KEY=sk-x\n").unwrap();
    run();
    assert!(std::fs::read_to_string(&conf)
        .unwrap()
        .ends_with("# edited\n"));
    assert_eq!(
        std::fs::read_to_string(r.join("etc/tollgate/env")).unwrap(),
        "OPENAI_API_KEY=sk-x\n"
    );
    assert!(!r.join("usr/local/bin/tollgate.new").exists());
}
