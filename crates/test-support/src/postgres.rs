//! A private PostgreSQL server for fault tests that stop and restart it
//! without disturbing the shared test server.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A throwaway cluster in a temporary directory, on a free loopback port.
/// Stopped and removed on drop.
pub struct PrivatePostgres {
    dir: PathBuf,
    pub port: u16,
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (initdb
/// refuses to run as root), directly otherwise.
fn pg_tool(tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let path = format!("{BIN}/{tool}");
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let output = if is_root {
        Command::new("runuser")
            .args(["-u", "postgres", "--", &path])
            .args(args)
            .output()
    } else {
        Command::new(&path).args(args).output()
    }
    .with_context(|| format!("cannot run {tool}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

impl PrivatePostgres {
    pub fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(crate::unique("ordersaga-pg"));
        std::fs::create_dir_all(&dir)?;
        // The postgres user must own the directory when we run as root.
        let _ = Command::new("chown")
            .args(["postgres:postgres", &dir.to_string_lossy()])
            .status();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let data = dir.join("data");
        pg_tool(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        )?;
        let server = Self { dir, port };
        server.resume()?;
        Ok(server)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server the way a crash of its host would look to clients:
    /// every connection is cut at once.
    pub fn stop(&self) -> anyhow::Result<()> {
        pg_tool(
            "pg_ctl",
            &[
                "-D",
                &self.dir.join("data").to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
    }

    pub fn resume(&self) -> anyhow::Result<()> {
        let data = self.dir.join("data");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.dir.to_string_lossy()
        );
        pg_tool(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &self.dir.join("log").to_string_lossy(),
                "-w",
                "-o",
                &options,
                "start",
            ],
        )
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
