//! `portcullis demo` as a newcomer starts it: the binary, the URL and the
//! config file it prints.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

pub struct Demo {
    pub child: std::process::Child,
    pub url: String,
    /// The file it printed as its config.
    pub config: std::path::PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start() -> Demo {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut config) = (None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("Open") {
            url = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("Config") {
            config = Some(std::path::PathBuf::from(rest.trim()));
            break;
        }
    }
    // Keep reading what it prints, as a terminal would.
    std::thread::spawn(move || lines.for_each(drop));
    Demo {
        child,
        url: url.expect("the demo prints the URL to open"),
        config: config.expect("the demo prints its config file"),
    }
}

pub async fn wait_up(url: &str) {
    let health = format!("{url}_portcullis/healthz");
    super::eventually(
        "the demo comes up",
        std::time::Duration::from_secs(30),
        || async { reqwest::get(&health).await.ok().map(|_| ()) },
    )
    .await;
}
