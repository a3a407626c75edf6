//! The Debian package: built with `systemd/build-deb.sh` (cargo-deb) from the binary under
//! test, its contents checked, then installed with `dpkg -i` as far as this machine allows
//! (no systemd as PID 1): files in place with their modes, the user and directories made by
//! postinst, `tollgate -t` on the installed config, the installed unit verifying; then purged.
//! Installing needs root; the test says so and checks only the package when not root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

/// Removes the package however the test ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "tollgate"]).output();
    }
}

#[test]
fn debian_package_installs_and_validates() {
    // Package the debug binary the tests built (`--profile dev`), quickly (`--fast`).
    let binary = Path::new(env!("CARGO_BIN_EXE_tollgate"));
    assert!(binary.ends_with("debug/tollgate"), "{}", binary.display());
    let out_dir = tempfile::tempdir().unwrap();
    let text = run(Command::new("bash")
        .arg(repo().join("systemd/build-deb.sh"))
        .args(["--profile", "dev", "--no-build", "--fast", "--output"])
        .arg(out_dir.path()));
    let deb = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("no .deb written: {text}"));

    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/tollgate",
        "./lib/systemd/system/tollgate.service",
        "./etc/tollgate/tollgate.yaml",
        "./etc/tollgate/env",
        "./usr/share/doc/tollgate/README.md",
    ] {
        assert!(
            listing.contains(path),
            "{path} missing from the package:\n{listing}"
        );
    }
    let control = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(
        control.contains("postinst") && control.contains("conffiles"),
        "{control}"
    );

    if !is_root() {
        eprintln!("not root: the package was built and checked but not installed");
        return;
    }
    let _purge = Purge;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert!(mode("/usr/bin/tollgate") & 0o111 != 0);
    assert_eq!(mode("/etc/tollgate/env"), 0o600);
    assert_eq!(mode("/etc/tollgate"), 0o750);
    assert_eq!(mode("/var/lib/tollgate"), 0o750);
    assert!(run(Command::new("getent").args(["passwd", "tollgate"])).starts_with("tollgate:"));
    let owner = run(Command::new("stat").args(["-c", "%U:%G", "/var/lib/tollgate"]));
    assert_eq!(owner.trim(), "tollgate:tollgate");

    // The installed config validates, with the installed env file's (empty) variables.
    run(Command::new("/usr/bin/tollgate").args(["-t", "-c", "/etc/tollgate/tollgate.yaml"]));
    // The installed unit names the installed binary and verifies.
    let unit = std::fs::read_to_string("/lib/systemd/system/tollgate.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/tollgate -d -c /etc/tollgate/tollgate.yaml"));
    assert!(!unit.contains("/usr/local/"), "{unit}");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg("/lib/systemd/system/tollgate.service")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stderr).to_string();
    assert!(
        verify.status.success() && !text.contains("tollgate.service:"),
        "{text}"
    );

    // An operator's edit survives reinstalling; purge removes everything.
    std::fs::write(
        "/etc/tollgate/tollgate.yaml",
        std::fs::read_to_string("/etc/tollgate/tollgate.yaml").unwrap() + "# edited\n",
    )
    .unwrap();
    run(Command::new("dpkg")
        .args(["-i", "--force-confold"])
        .arg(&deb));
    assert!(std::fs::read_to_string("/etc/tollgate/tollgate.yaml")
        .unwrap()
        .ends_with("# edited\n"));
    run(Command::new("dpkg").args(["--purge", "tollgate"]));
    assert!(!Path::new("/usr/bin/tollgate").exists());
    assert!(!Path::new("/var/lib/tollgate").exists());
}

/// Every variable the shipped systemd config reads is listed in the env template that the
/// installers put at /etc/tollgate/env.
#[test]
fn env_template_lists_every_variable_of_the_systemd_config() {
    let conf = std::fs::read_to_string(repo().join("conf/systemd.yaml")).unwrap();
    let template = std::fs::read_to_string(repo().join("systemd/env.example")).unwrap();
    let mut seen = 0;
    for part in conf.split("${").skip(1) {
        let name = part.split('}').next().unwrap();
        if name == "VAR" {
            continue; // the comment explaining the syntax
        }
        seen += 1;
        assert!(
            template.contains(&format!("{name}=")),
            "systemd/env.example does not list {name}"
        );
    }
    assert!(seen >= 6);
}
