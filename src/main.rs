//! `tollgate`: run the gateway, or check a config with `-t`.
//!
//! ```text
//! tollgate -c conf/tollgate.yaml        # run in the foreground
//! tollgate -c conf/tollgate.yaml -d     # daemonise (systemd Type=forking)
//! tollgate -c conf/tollgate.yaml -u -d  # take over the listeners of a running instance
//! tollgate -t -c conf/tollgate.yaml     # validate the config and exit
//! ```

use clap::Parser;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "tollgate",
    version,
    about = "OpenAI-compatible AI gateway on Pingora"
)]
struct Cli {
    /// Configuration file.
    #[arg(short = 'c', long = "conf", default_value = "conf/tollgate.yaml")]
    conf: String,
    /// Check the configuration and exit.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Run in the background.
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
    /// Take over the listening sockets of a running instance (graceful upgrade).
    #[arg(short = 'u', long = "upgrade")]
    upgrade: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let gateway = match tollgate::config::load(&cli.conf, None) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("tollgate: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.test {
        println!("tollgate: configuration {} is valid", cli.conf);
        return ExitCode::SUCCESS;
    }
    let switches = tollgate::server::Switches {
        daemon: cli.daemon,
        upgrade: cli.upgrade,
    };
    match tollgate::server::build(gateway, &cli.conf, switches) {
        Ok(server) => server.run_forever(),
        Err(e) => {
            eprintln!("tollgate: cannot start: {e}");
            ExitCode::from(1)
        }
    }
}
