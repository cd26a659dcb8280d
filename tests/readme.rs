//! README.md's own snippets, run as a new user would run them: the quick start's
//! `mgrd` (started here on a free port instead of 50000), the Python snippet with
//! the standard library, and the Rust snippet as a fresh Cargo project that depends
//! on this package by path.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::TempDir;

/// The address and key the README's commands and snippets use.
const README_ADDRESS: &str = "127.0.0.1:50000";
const README_KEY: &str = "secret";

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    std::fs::read_to_string(path).expect("README.md")
}

/// The bodies of the fenced blocks opened with exactly "```lang".
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_end() == fence => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_end() == "```" => out.push(current.take().unwrap()),
            Some(body) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    out
}

/// `mgrd` as the quick start runs it, but on a free port.
struct Mgrd {
    child: Child,
    address: String,
}

impl Mgrd {
    fn start() -> Mgrd {
        Mgrd::start_with(README_KEY, &[])
    }

    /// `mgrd` with this key and these arguments besides the address.
    fn start_with(key: &str, args: &[&str]) -> Mgrd {
        let mut child = Command::new(common::mgrd())
            .args(["--address", "127.0.0.1:0"])
            .args(args)
            .env("MGR_AUTHKEY", key)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start mgrd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("mgrd's first line");
        let address = line
            .trim()
            .strip_prefix("mgrd listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Mgrd { child, address }
    }

    fn port(&self) -> &str {
        self.address.rsplit(':').next().unwrap()
    }
}

impl Drop for Mgrd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn quick_start_uses_the_address_and_key_the_snippets_use() {
    let text = readme();
    let quick = &blocks(&text, "sh")[0];
    assert!(
        quick.contains(&format!("MGR_AUTHKEY={README_KEY} "))
            && quick.contains(&format!("--address {README_ADDRESS}")),
        "the quick start changed; update README_ADDRESS / README_KEY: {quick}"
    );
}

#[test]
fn python_snippet_runs_against_mgrd() {
    let text = readme();
    let python = blocks(&text, "python");
    assert_eq!(python.len(), 1, "one Python snippet");
    let server = Mgrd::start();
    let script = python[0].replace("50000", server.port());
    assert_ne!(script, python[0], "the snippet names port 50000");
    let out = Command::new("python3")
        .args([
            "-c",
            &format!("{script}\nprint('snippet done', d['k'], ns.state)"),
        ])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("snippet done [1, 2] running"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn named_object_snippet_runs_against_mgrd_object() {
    // The "Using a remote manager" client, against the mgrd command above it.
    let text = readme();
    let command = blocks(&text, "sh")
        .into_iter()
        .find(|b| b.contains("--object"))
        .expect("the README shows mgrd --object");
    assert!(
        command.contains("MGR_AUTHKEY=abracadabra ")
            && command.contains("--object get_queue=Queue"),
        "the command changed; update this test: {command}"
    );
    let py = blocks(&text, "py");
    assert_eq!(py.len(), 1, "one named-object snippet");
    let server = Mgrd::start_with("abracadabra", &["--object", "get_queue=Queue"]);
    let script = py[0].replace("50000", server.port());
    assert_ne!(script, py[0], "the snippet names port 50000");
    // A second client (another process) takes the item the snippet put.
    let getter = "from multiprocessing.managers import BaseManager\n\
                  class QueueManager(BaseManager): pass\n\
                  QueueManager.register('get_queue')\n\
                  m = QueueManager(address=('127.0.0.1', PORT), authkey=b'abracadabra')\n\
                  m.connect()\n\
                  print('got', m.get_queue().get(timeout=10))\n"
        .replace("PORT", server.port());
    for (code, expect) in [(script.as_str(), ""), (getter.as_str(), "got hello")] {
        let out = Command::new("python3")
            .args(["-c", code])
            .output()
            .expect("run python3");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(expect),
            "stdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn rust_snippet_builds_as_a_new_project_and_runs_against_mgrd() {
    let text = readme();
    let rust = blocks(&text, "rust");
    assert_eq!(rust.len(), 1, "one Rust snippet");
    let toml = blocks(&text, "toml");
    assert!(
        toml.iter().any(|t| t.contains("libmgr = { path = ")),
        "the README gives the dependency line"
    );
    let server = Mgrd::start();
    let main = rust[0].replace(README_ADDRESS, &server.address);
    assert_ne!(main, rust[0], "the snippet names {README_ADDRESS}");

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let project = TempDir::new("mgr-readme");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(
        project.join("Cargo.toml"),
        format!(
            "[package]\nname = \"readme-snippet\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nlibmgr = {{ path = {:?} }}\n\n[workspace]\n",
            root.display().to_string()
        ),
    )
    .unwrap();
    // The same dependency versions as this package, so the build needs no network.
    std::fs::copy(root.join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    std::fs::write(project.join("src/main.rs"), main).unwrap();
    // The snippets that serve (they run until shut down) are built, not run.
    let hosts = blocks(&text, "rust,no_run");
    assert!(!hosts.is_empty(), "the README shows a Rust host type");
    std::fs::create_dir_all(project.join("examples")).unwrap();
    for (i, host) in hosts.iter().enumerate() {
        std::fs::write(project.join(&format!("examples/host{i}.rs")), host).unwrap();
    }
    // C artifacts left in the shared target dir by an older layout would look
    // like this build's: remove them first.
    let built = root.join("target/readme/debug");
    let is_c_artifact = |n: &str| {
        n == "mgrd" || (n.starts_with("libmgr") && (n.ends_with(".so") || n.ends_with(".a")))
    };
    for dir in [built.clone(), built.join("deps")] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if is_c_artifact(&e.file_name().to_string_lossy()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["run", "--quiet", "--offline"])
        .current_dir(project.join(""))
        .env("CARGO_TARGET_DIR", root.join("target/readme"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("alice has Int(10); next job: Str(\"job 1\")"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--quiet", "--offline", "--examples"])
        .current_dir(project.join(""))
        .env("CARGO_TARGET_DIR", root.join("target/readme"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "the README's host snippets build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Depending on the library builds the Rust library only: no libmgr.so or
    // libmgr.a (those are the libmgr-capi package's), no mgrd.
    let names: Vec<String> = [built.clone(), built.join("deps")]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let c_artifacts: Vec<&String> = names.iter().filter(|n| is_c_artifact(n)).collect();
    assert!(
        c_artifacts.is_empty(),
        "a Rust dependent built {c_artifacts:?}"
    );
    assert!(names
        .iter()
        .any(|n| n.starts_with("libmgr-") && n.ends_with(".rlib")));
}
