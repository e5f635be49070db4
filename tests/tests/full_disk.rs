//! A full data disk, for real: `bertsweep serve` runs in its own mount namespace with its
//! database and data directory on a 6 MB tmpfs (made by the test, as root). Uploads are
//! refused before they would take the disk below `--min-free-space`; once the disk is filled
//! to the brim by something else, the database cannot commit: health turns NOT_SERVING and a
//! state-changing call answers UNAVAILABLE with the reason instead of hanging; once space
//! returns it recovers by itself, and what it acknowledged before is all there.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bertsweep_tests::{eventually, skip, unrunnable_study, Coordinator};

fn run(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn is_root() -> bool {
    run("id", &["-u"]).stdout.starts_with(b"0")
}

/// A shell command run in the coordinator's mount namespace (it sees the tmpfs).
fn in_namespace(pid: u32, script: &str) -> std::process::Output {
    run("nsenter", &["-t", &pid.to_string(), "-m", "sh", "-c", script])
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

#[test]
fn a_full_disk_refuses_uploads_fails_fast_and_recovers_by_itself() {
    if !is_root() || Command::new("unshare").arg("--help").output().is_err() {
        return skip("needs root with unshare and nsenter to mount a small tmpfs in a mount namespace");
    }
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let mount = format!("mount -t tmpfs -o size=6m tmpfs {d} && exec \"$0\" \"$@\"", d = disk.display());
    let prefix: Vec<String> =
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", &mount].iter().map(|s| s.to_string()).collect();
    // The log goes beside the disk (opened before the namespace is made).
    let db = disk.join("coord.db");
    let data = disk.join("data");
    let coordinator = Coordinator::start_in(
        &prefix,
        "127.0.0.1:0",
        &db,
        "30s",
        &["--data-dir", data.to_str().unwrap(), "--min-free-space", "2MiB"],
    );
    let pid = coordinator.child.id();
    let df = in_namespace(pid, &format!("df -k {}", disk.display()));
    assert!(String::from_utf8_lossy(&df.stdout).contains("tmpfs"), "the coordinator sees its tmpfs: {df:?}");

    // Acknowledged before the disk fills.
    let first = unrunnable_study(tmp.path(), "before");
    let out = coordinator.cli(&["study", "create", first.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // An input that would take the disk below 2 MiB free is refused before any byte lands.
    let big = tmp.path().join("big.tsv");
    let mut rows = String::from("sentence\tlabel\n");
    while rows.len() < 5 << 20 {
        rows.push_str("a sentence long enough to fill a small disk quickly\t1\n");
    }
    std::fs::write(&big, rows).unwrap();
    let study = tmp.path().join("upload.toml");
    let text = std::fs::read_to_string(&first)
        .unwrap()
        .replace("\"before\"", "\"upload\"")
        .replace("worker:/t.tsv", big.to_str().unwrap());
    std::fs::write(&study, text).unwrap();
    let out = coordinator.cli(&["study", "create", study.to_str().unwrap()]);
    let e = stderr(&out);
    assert!(!out.status.success() && e.contains("--min-free-space") && e.lines().count() == 1, "{e}");

    // Something else fills the disk to the brim: the database can no longer commit.
    in_namespace(pid, &format!("dd if=/dev/zero of={}/filler bs=64k 2>/dev/null; true", disk.display()));
    let during = unrunnable_study(tmp.path(), "during");
    // Answered, not left hanging: the call must end on its own within a minute.
    let mut call = bertsweep_tests::command_in(&coordinator.prefix, &bertsweep_tests::binary("bertsweep"))
        .env("BERTSWEEP_COORDINATOR", &coordinator.url)
        .env("RUST_LOG", "off")
        .args(["study", "create", during.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ended = std::time::Instant::now() + Duration::from_secs(60);
    while call.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > ended {
            let _ = call.kill();
            panic!("study create hung on a full disk instead of answering");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = call.wait_with_output().unwrap();
    let e = stderr(&out);
    assert!(!out.status.success() && e.contains("cannot write its database"), "{e}");
    eventually("health to turn NOT_SERVING", Duration::from_secs(30), || {
        let out = coordinator.cli(&["health"]);
        (!out.status.success() && stderr(&out).contains("NOT_SERVING")).then_some(())
    });
    let refused = coordinator.cli(&["study", "stop", "before"]);
    assert!(
        !refused.status.success() && stderr(&refused).contains("cannot write its database"),
        "{}",
        stderr(&refused)
    );

    // Space returns: it recovers by itself, with everything acknowledged.
    in_namespace(pid, &format!("rm -f {}/filler", disk.display()));
    eventually("health to turn SERVING again", Duration::from_secs(60), || {
        coordinator.cli(&["health"]).status.success().then_some(())
    });
    let after = unrunnable_study(tmp.path(), "after");
    let out = coordinator.cli(&["study", "create", after.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = coordinator.cli(&["study", "list", "--format", "json"]);
    let names: Vec<String> = serde_json::from_slice::<serde_json::Value>(&listed.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    for name in ["before", "after"] {
        assert!(names.contains(&name.to_string()), "{name} in {names:?}");
    }
    assert!(!Path::new(&disk.join("filler")).exists(), "the tmpfs was the coordinator's alone");
}
