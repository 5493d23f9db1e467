//! A PostgreSQL server of a test's own, for tests that stop or restart
//! it (the shared one that `./dev test` starts must stay up for the
//! others): Debian's binaries, a fresh cluster in a temporary directory,
//! listening on a Unix socket there only, so no TCP port is picked.

use std::path::PathBuf;
use std::process::Command;

pub struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl OwnPostgres {
    /// initdb, then start; waits until the server accepts connections.
    pub fn start() -> OwnPostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed: run the tests with `./dev test`")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("no initdb under /usr/lib/postgresql");
        let dir = tempfile::tempdir().unwrap();
        let pg = OwnPostgres { dir, bin };
        if pg.as_root() {
            // initdb refuses root: the server runs as `postgres`.
            let ok = Command::new("chown")
                .arg("postgres")
                .arg(pg.dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown postgres {}", pg.dir.path().display());
        }
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "portcullis",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        pg.ctl(&["start", "-w"]);
        pg
    }

    fn as_root(&self) -> bool {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
            })
            .unwrap_or(false)
    }

    /// `tool` of this server's version, run as `postgres` when we are root.
    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ctl(&self, args: &[&str]) {
        let options = format!(
            "-c listen_addresses='' -k {} -c fsync=off -c max_connections=100",
            self.dir.path().display()
        );
        let data = self.data();
        let log = self.dir.path().join("log").display().to_string();
        let mut all = vec!["-D", &data, "-l", &log, "-o", &options];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all);
    }

    /// The `postgres` database, over the Unix socket.
    pub fn url(&self) -> String {
        format!(
            "postgres://portcullis@localhost/postgres?host={}",
            self.dir.path().display()
        )
    }

    /// A crash and a start: `-m immediate` ends every connection at once,
    /// in-flight transactions with them, and recovery runs at start.
    pub fn restart(&self) {
        self.ctl(&["restart", "-m", "immediate", "-w"]);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}
