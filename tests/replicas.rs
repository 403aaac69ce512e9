//! Three `sluice serve` replicas on one PostgreSQL state store, one killed
//! with SIGKILL and one frozen with SIGSTOP past the heartbeat timeout in
//! the middle of a 300-task-instance run.
//!
//! Each of the 150 units is a PostgreSQL extract that sleeps and returns
//! one row naming its task, its attempt (`ti.try_number`) and its replica
//! (`ti.hostname`), fused with a load: even units append to a PostgreSQL
//! table (fenced in the target by the load marker), odd ones publish
//! Parquet (fenced by the state store's claim). The test watches the
//! state store from outside and records every claim it sees (task,
//! attempt, replica, when), so it knows which claims the killed and the
//! frozen replica held, when they were taken over, and what each attempt
//! published.

#[path = "../crates/sluice/tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Units (an extract and its load each): 300 task instances.
const UNITS: usize = 150;
/// What each extract sleeps, in seconds, on the database server.
const SLEEP: f64 = 0.5;
/// The daemon's heartbeat, its timeout (five beats), the pass that looks
/// for lapsed claims (once a beat) and the scan (every second).
const HEARTBEAT: Duration = Duration::from_secs(2);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);
const SCAN: Duration = Duration::from_secs(1);

fn job(out: &Path, target: &str) -> String {
    let mut s =
        String::from("description = \"Replicas under fire\"\nretries = 3\nretry_delay = \"1s\"\n");
    for i in 0..UNITS {
        s += &format!(
            "[tasks.e{i:03}]\nextract = \"sql\"\nconnection = \"{target}\"\n\
             query = \"SELECT {i}::bigint AS task_no, {{{{ ti.try_number }}}}::bigint AS attempt, \
             {{{{ ti.hostname | sql }}}}::text AS replica FROM pg_sleep({SLEEP})\"\n"
        );
        if i % 2 == 0 {
            s += &format!(
                "[tasks.l{i:03}]\nload = \"sql\"\ninput = \"e{i:03}\"\nconnection = \"{target}\"\n\
                 table = \"published\"\nmode = \"append\"\ncreate = true\n"
            );
        } else {
            s += &format!(
                "[tasks.l{i:03}]\nload = \"parquet\"\ninput = \"e{i:03}\"\nurl = \"file://{}/t{i:03}/\"\n",
                out.display()
            );
        }
    }
    s
}

/// A published row: (attempt, replica, when, in seconds since the epoch).
type Published = (i64, String, f64);

fn epoch_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One claim seen in the store: a task instance running on a replica.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Claim {
    unit: usize,
    attempt: i64,
    worker: String,
}

/// The state store's task instances of the run: (task, state, try,
/// worker, ended_by).
fn task_instances(state_db: &str) -> Vec<(String, String, i64, String, String)> {
    common::psql(
        state_db,
        "SELECT task, state, try_number, coalesce(worker, ''), coalesce(ended_by, '') \
         FROM task_instances WHERE dag = 'replicas' ORDER BY task",
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (
            f[0].to_string(),
            f[1].to_string(),
            f[2].parse().unwrap(),
            f[3].to_string(),
            f[4].to_string(),
        )
    })
    .collect()
}

fn unit_of(task: &str) -> usize {
    task[1..].parse().unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {}", child.id());
}

/// The rows every visible Parquet file of a unit holds: (task_no,
/// attempt, replica, when the file was written in seconds since the
/// epoch), read by pyarrow.
fn parquet_rows(dir: &Path) -> BTreeMap<usize, Vec<Published>> {
    let script = r#"
import sys, glob, os, json, pyarrow.parquet as pq
out = {}
for d in sorted(glob.glob(os.path.join(sys.argv[1], "t*"))):
    for f in sorted(glob.glob(os.path.join(d, "*.parquet"))):
        for r in pq.read_table(f).to_pylist():
            out.setdefault(str(r["task_no"]), []).append([r["attempt"], r["replica"], os.path.getmtime(f)])
print(json.dumps(out))
"#;
    let text = common::python_script(script, &[&dir.display().to_string()]);
    let v: HashMap<String, Vec<Published>> = serde_json::from_str(text.trim()).unwrap();
    v.into_iter()
        .map(|(k, r)| (k.parse().unwrap(), r))
        .collect()
}

#[test]
fn three_replicas_survive_a_kill_and_a_freeze() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let state = common::fresh_postgres_database();
    let target = common::fresh_postgres_database();
    let (state_db, target_db) = (common::database_of(&state), common::database_of(&target));
    let out = root.join("out");
    std::fs::create_dir_all(root.join("jobs")).unwrap();
    std::fs::write(root.join("jobs/replicas.toml"), job(&out, &target)).unwrap();
    std::fs::write(
        root.join("sluice.toml"),
        format!(
            "jobs = \"{d}/jobs\"\nstate = \"{state}\"\nstaging = \"file://{d}/staging\"\n\
             dead_letter = \"file://{d}/dead\"\nlisten = \"127.0.0.1:0\"\nworkers = 4\n",
            d = root.display()
        ),
    )
    .unwrap();
    let sluice = || {
        let mut c = common::sluice(root);
        c.arg("--config").arg(root.join("sluice.toml"));
        c
    };
    // The SQL loads append here; the column they do not write records
    // when each row went in (the load commits right after).
    common::psql(
        target_db,
        "CREATE TABLE published (task_no bigint, attempt bigint, replica text, \
         written_at double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp()))",
    );
    let made =
        common::run(sluice().args(["trigger", "replicas", "--date", "2026-11-24", "--local"]));
    assert!(made.status.success(), "trigger: {}", common::stderr(&made));

    let names = ["replica-a", "replica-b", "replica-c"];
    let mut replicas: Vec<Child> = names
        .iter()
        .enumerate()
        .map(|(n, host)| {
            let log = std::fs::File::create(root.join(format!("serve-{n}.log"))).unwrap();
            sluice()
                .arg("serve")
                .env("SLUICE_LOG", "info")
                .env("HOSTNAME", host)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap()
        })
        .collect();
    let worker = |n: usize| format!("{}-{}", names[n], replicas[n].id());
    let (a, b) = (worker(0), worker(1));
    let log = |n: usize| std::fs::read_to_string(root.join(format!("serve-{n}.log"))).unwrap();

    // Every claim seen, with when it was first seen.
    let mut seen: BTreeMap<Claim, Instant> = BTreeMap::new();
    let watch = |seen: &mut BTreeMap<Claim, Instant>| {
        let tis = task_instances(state_db);
        let now = Instant::now();
        for (task, state, attempt, worker, _) in &tis {
            if state == "running" && task.starts_with('l') {
                seen.entry(Claim {
                    unit: unit_of(task),
                    attempt: *attempt,
                    worker: worker.clone(),
                })
                .or_insert(now);
            }
        }
        tis
    };
    let held_by =
        |tis: &[(String, String, i64, String, String)], w: &str| -> BTreeSet<(usize, i64)> {
            tis.iter()
                .filter(|t| t.1 == "running" && t.3 == w && t.0.starts_with('l'))
                .map(|t| (unit_of(&t.0), t.2))
                .collect()
        };

    // Wait until the run is under way and both victims hold claims.
    let t0 = Instant::now();
    loop {
        let tis = watch(&mut seen);
        let done = tis.iter().filter(|t| t.1 == "success").count();
        if done >= 40 && !held_by(&tis, &a).is_empty() && !held_by(&tis, &b).is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the replicas did not get going:\n{}",
            log(0)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill_wall = epoch_seconds();
    signal(&replicas[0], "-KILL");
    let t_kill = Instant::now();
    replicas[0].wait().unwrap();
    let stop_wall = epoch_seconds();
    signal(&replicas[1], "-STOP");
    // Neither can change the store now: what it says they run is what
    // they held.
    let tis = watch(&mut seen);
    let (killed, frozen) = (held_by(&tis, &a), held_by(&tis, &b));
    assert!(
        !killed.is_empty() && !frozen.is_empty(),
        "{killed:?} {frozen:?}"
    );

    // The frozen replica stays frozen until every claim it held has been
    // taken over: past the heartbeat timeout.
    let t_stop = Instant::now();
    let taken_over = |seen: &BTreeMap<Claim, Instant>, held: &BTreeSet<(usize, i64)>, by: &str| {
        held.iter()
            .map(|(u, n)| {
                seen.iter()
                    .filter(|(c, _)| c.unit == *u && c.attempt > *n && c.worker != by)
                    .map(|(_, t)| *t)
                    .min()
            })
            .collect::<Option<Vec<Instant>>>()
    };
    loop {
        watch(&mut seen);
        if taken_over(&seen, &frozen, &b).is_some() {
            break;
        }
        assert!(
            t_stop.elapsed() < Duration::from_secs(60),
            "the frozen replica's claims were not taken over: {frozen:?}\n{}",
            log(2)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(t_stop.elapsed() >= HEARTBEAT_TIMEOUT - HEARTBEAT);
    signal(&replicas[1], "-CONT");

    // The run ends with every task instance a success.
    let t_cont = Instant::now();
    let tis = loop {
        let tis = watch(&mut seen);
        if tis.iter().all(|t| t.1 == "success") {
            break tis;
        }
        assert!(
            t_cont.elapsed() < Duration::from_secs(240),
            "the run did not finish: {:?}",
            tis.iter().filter(|t| t.1 != "success").collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(tis.len(), 2 * UNITS);
    // A replica ends the run at its next pass.
    let t_done = Instant::now();
    loop {
        let state = common::psql(
            state_db,
            "SELECT state FROM dag_runs WHERE dag = 'replicas'",
        );
        if state.trim() == "success" {
            break;
        }
        assert!(
            t_done.elapsed() < Duration::from_secs(30),
            "the run is {state} with every task instance a success"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for child in &mut replicas[1..] {
        signal(child, "-TERM");
        assert!(child.wait().unwrap().success());
    }

    // The dead replica's claims ran again within the heartbeat timeout
    // plus one pass of the lapsed-claim check and one scan (its last
    // heartbeat was at most at the kill).
    let rerun = taken_over(&seen, &killed, &a).expect("the killed replica's claims ran again");
    for (t, claim) in rerun.iter().zip(&killed) {
        let after = t.duration_since(t_kill);
        assert!(
            after <= HEARTBEAT_TIMEOUT + HEARTBEAT + SCAN + Duration::from_millis(1500),
            "unit {claim:?} ran again {after:?} after the kill"
        );
    }

    // Each unit's output was published once: by the attempt the store
    // recorded as its success, or by one the killed replica had under way
    // and committed before it died (a SQL load's marker then tells the
    // re-run that the rows are in); never by the frozen replica.
    let last: HashMap<usize, (i64, String)> = tis
        .iter()
        .filter(|t| t.0.starts_with('l'))
        .map(|t| (unit_of(&t.0), (t.2, t.4.clone())))
        .collect();
    let mut published: BTreeMap<usize, Vec<Published>> = BTreeMap::new();
    for line in common::psql(
        target_db,
        "SELECT task_no, attempt, replica, written_at FROM published",
    )
    .lines()
    {
        let f: Vec<&str> = line.split('|').collect();
        published.entry(f[0].parse().unwrap()).or_default().push((
            f[1].parse().unwrap(),
            f[2].to_string(),
            f[3].parse().unwrap(),
        ));
    }
    published.extend(parquet_rows(&out));
    let mut before_signal = 0;
    for unit in 0..UNITS {
        let rows = published.get(&unit).cloned().unwrap_or_default();
        let ok = match rows.as_slice() {
            [(attempt, replica, _)] if (*attempt, replica.clone()) == last[&unit] => true,
            // Published while the claim stood, ended too late to say so.
            [(attempt, replica, at)]
                if (*replica == a && killed.contains(&(unit, *attempt)) && *at < kill_wall)
                    || (*replica == b && frozen.contains(&(unit, *attempt)) && *at < stop_wall) =>
            {
                before_signal += 1;
                true
            }
            _ => false,
        };
        assert!(
            ok,
            "unit {unit}: published {rows:?}; the store's successful attempt is {:?} \
             (killed at {kill_wall}, frozen at {stop_wall})",
            last[&unit]
        );
    }

    // The frozen replica woke up to attempts that had lost their claims:
    // none of them published (above), and it says so for each.
    let b_log = log(1);
    for (unit, attempt) in &frozen {
        assert_ne!(last[unit].1, b, "unit {unit} ended on the frozen replica");
        // The daemon logs JSON lines when its stderr is not a terminal.
        let said = b_log.lines().any(|l| {
            let Ok(line) = serde_json::from_str::<serde_json::Value>(l) else {
                return false;
            };
            let f = &line["fields"];
            f["message"] == "attempt fenced: its output was not published"
                && f["task"] == format!("l{unit:03}").as_str()
                && f["attempt"] == *attempt
        });
        assert!(said, "unit {unit}: no fenced attempt {attempt} in\n{b_log}");
    }
    // Every claim the test saw was one attempt: no attempt number twice.
    let mut attempts: HashMap<(usize, i64), BTreeSet<String>> = HashMap::new();
    for c in seen.keys() {
        attempts
            .entry((c.unit, c.attempt))
            .or_default()
            .insert(c.worker.clone());
    }
    for ((unit, attempt), workers) in &attempts {
        assert_eq!(
            workers.len(),
            1,
            "unit {unit} attempt {attempt} claimed by {workers:?}"
        );
    }
    eprintln!(
        "killed held {killed:?} ({before_signal} published before the signal), frozen held {frozen:?}; reruns after the kill: {:?}; {} claims seen",
        rerun
            .iter()
            .map(|t| t.duration_since(t_kill))
            .collect::<Vec<_>>(),
        seen.len()
    );
}
