//! Sentinel, for real: a primary and two replicas with the module, three sentinels, and
//! workers that take and give back locks through redis-rs's sentinel client while the primary
//! is SIGKILLed again and again. After each failover every worker reconnects through the
//! sentinels, finds the new primary, and checks each of its keys there against what it was
//! told before the kill.
//!
//! - With durability (`WAIT 1` after each grant) no acknowledged grant may be lost.
//! - Without it, grants can be lost; they are counted and printed, not asserted away.
//! - Either way, every token a worker sees for a key is larger than every earlier one for that
//!   key, across every failover (lost grants included).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pylocks::{Durability, Error, LockFactory, LockHandle};
use redis::sentinel::{SentinelClient, SentinelServerType};
use testkit::sentinel::SERVICE;
use testkit::{server_tests, try_holder, SentinelGroup};

const WORKERS: usize = 3;
const KEYS: usize = 6;
/// Long enough that no lease expires during a test: a key that is free was released.
const TTL: Duration = Duration::from_secs(300);
/// How long a worker may take to find the new primary after losing the old one.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// A worker's last known state of one key.
#[derive(Default)]
struct Slot {
    /// The lease we were last told we hold (acknowledged grant, not released since).
    held: Option<LockHandle>,
    /// The call whose reply the failover cut off.
    pending: Option<Pending>,
    /// Every lease granted for this key so far, as (id, token): a failover rolls a key back to
    /// one of these, or to free.
    history: Vec<(String, i64)>,
    /// The largest token seen for this key.
    max_token: i64,
}

enum Pending {
    Acquire,
    Release(LockHandle),
}

/// What one worker saw.
#[derive(Default, Debug)]
struct Report {
    grants: u64,
    releases: u64,
    /// Grants refused by durability (WAIT saw no replica in time); the lease was released.
    not_replicated: u64,
    /// Acknowledged grants a failover lost: the key was free, or held by an earlier lease.
    lost_grants: Vec<String>,
    /// Acknowledged releases a failover undid: the key was held again by the released lease.
    undone_releases: u64,
    /// Calls cut off by a kill whose effect survived (found on the new primary).
    in_flight_applied: u64,
    /// The primaries this worker ran on, in order (ports).
    primaries: Vec<u16>,
    /// From a failed call to the first reply of the new primary.
    outages: Vec<Duration>,
    /// Broken checks; must stay empty.
    violations: Vec<String>,
}

/// Where each worker is: the primary it works on now and the grants acknowledged there.
#[derive(Default)]
struct Progress(Mutex<(u16, u64)>);

impl Progress {
    fn moved_to(&self, port: u16) {
        *self.0.lock().unwrap() = (port, 0);
    }
    fn granted(&self) {
        self.0.lock().unwrap().1 += 1;
    }
    fn get(&self) -> (u16, u64) {
        *self.0.lock().unwrap()
    }
}

fn connect(sentinel: &mut SentinelClient) -> Result<(redis::Connection, u16), redis::RedisError> {
    let deadline = Instant::now() + RECONNECT_DEADLINE;
    loop {
        // get_client asks the sentinels for the primary and checks its ROLE.
        let attempt = sentinel.get_client().and_then(|c| {
            let mut con = c.get_connection_with_timeout(Duration::from_secs(1))?;
            con.set_read_timeout(Some(Duration::from_secs(10)))?;
            let info: String = redis::cmd("INFO").arg("server").query(&mut con)?;
            let port = testkit::info_field(&info, "tcp_port")
                .and_then(|p| p.parse().ok())
                .expect("tcp_port in INFO server");
            Ok((con, port))
        });
        match attempt {
            Ok(found) => return Ok(found),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Compares every key with what the primary behind `con` holds, after a failover (`after_kill`)
/// or at the end (where nothing may differ). Takes over leases we hold there.
fn verify(
    locks: &LockFactory,
    con: &mut redis::Connection,
    slots: &mut [Slot],
    report: &mut Report,
    after_kill: bool,
) -> Result<(), redis::RedisError> {
    for (k, slot) in slots.iter_mut().enumerate() {
        let key = locks.key([k]).unwrap();
        let got = try_holder(con, &key)?.map(|h| {
            let id = String::from_utf8(h.lease.id).expect("utf-8 lease id");
            (id, h.lease.token)
        });
        let expected = slot
            .held
            .as_ref()
            .map(|h| (h.lease_id().to_string(), h.token()));
        let pending = slot.pending.take();
        let mut adopt = None;
        match (&got, &expected, &pending) {
            (g, e, _) if g == e => {}
            // The cut-off grant took effect: a lease of ours we never heard of.
            (Some((id, token)), None, Some(Pending::Acquire))
                if !slot.history.iter().any(|(i, _)| i == id) =>
            {
                report.in_flight_applied += 1;
                if *token <= slot.max_token {
                    report.violations.push(format!(
                        "{key}: token {token} of the in-flight grant after {}",
                        slot.max_token
                    ));
                }
                slot.max_token = slot.max_token.max(*token);
                slot.history.push((id.clone(), *token));
                adopt = got.clone();
            }
            // The cut-off release did not take effect: we still hold it.
            (Some(g), None, Some(Pending::Release(h)))
                if (h.lease_id(), h.token()) == (g.0.as_str(), g.1) =>
            {
                adopt = got.clone();
            }
            _ if !after_kill => report.violations.push(format!(
                "{key}: holds {got:?} but the last acknowledged state is {expected:?}"
            )),
            // A rollback to an earlier state: free, or an earlier lease of ours.
            (g, _, _) if g.as_ref().is_none_or(|g| slot.history.contains(g)) => {
                if let Some(e) = &expected {
                    report.lost_grants.push(format!(
                        "{key}: lease {} token {} lost; now {g:?}",
                        e.0, e.1
                    ));
                }
                if g.is_some() {
                    report.undone_releases += 1;
                    adopt = got.clone();
                }
            }
            _ => report.violations.push(format!(
                "{key}: holds {got:?}, a lease never granted to us (expected {expected:?})"
            )),
        }
        slot.held = match adopt {
            None if got.is_none() => None,
            None => slot.held.take(),
            Some((id, token)) => {
                // Take the lease over with the client's own call (PYLOCK.CONFIRM).
                let h = match locks.get_handle(con, [k], &id) {
                    Ok(h) => h,
                    Err(Error::Redis(e)) => return Err(e),
                    Err(e) => {
                        report
                            .violations
                            .push(format!("{key}: get_handle {id}: {e}"));
                        continue;
                    }
                };
                if h.token() != token {
                    report.violations.push(format!(
                        "{key}: CONFIRM says token {} for {id}, INFO {token}",
                        h.token()
                    ));
                }
                Some(h)
            }
        };
    }
    Ok(())
}

/// Takes and releases the locks of its own keys (random order, one call at a time) until
/// `stop`; on a broken call, reconnects through the sentinels and verifies every key.
fn worker(
    w: usize,
    sentinels: Vec<String>,
    durable: bool,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
) -> Report {
    let mut sentinel = SentinelClient::build(
        sentinels,
        SERVICE.to_string(),
        None,
        SentinelServerType::Master,
    )
    .expect("sentinel client");
    let mut builder = LockFactory::builder(format!("w{w}"), TTL);
    if durable {
        builder = builder.durability(Durability::new(1, Duration::from_secs(2)));
    }
    let locks = builder.build().unwrap();
    let mut slots: Vec<Slot> = (0..KEYS).map(|_| Slot::default()).collect();
    let mut report = Report::default();
    let (mut con, port) = connect(&mut sentinel).expect("the first primary");
    report.primaries.push(port);
    progress.moved_to(port);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ (w as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
    while !stop.load(Ordering::Relaxed) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let k = (rng % KEYS as u64) as usize;
        let slot = &mut slots[k];
        let result = match slot.held.take() {
            Some(h) => {
                slot.pending = Some(Pending::Release(h.clone()));
                h.release(&mut con).map(|()| report.releases += 1)
            }
            None => {
                slot.pending = Some(Pending::Acquire);
                match locks.acquire(&mut con, [k]) {
                    Ok(h) => {
                        if h.token() <= slot.max_token {
                            report.violations.push(format!(
                                "{}: token {} granted after {}",
                                h.key(),
                                h.token(),
                                slot.max_token
                            ));
                        }
                        slot.max_token = slot.max_token.max(h.token());
                        slot.history.push((h.lease_id().to_string(), h.token()));
                        slot.held = Some(h);
                        report.grants += 1;
                        progress.granted();
                        Ok(())
                    }
                    Err(Error::NotReplicated { released: true, .. }) => {
                        report.not_replicated += 1;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(()) => slot.pending = None,
            // The primary is gone (or the release after a refused WAIT broke): find the new
            // one and check every key there. A failover during the check starts it again.
            Err(
                Error::Redis(_)
                | Error::NotReplicated {
                    released: false, ..
                },
            ) => {
                let down = Instant::now();
                loop {
                    let (mut c, port) = match connect(&mut sentinel) {
                        Ok(found) => found,
                        Err(e) => {
                            report.violations.push(format!("no primary found: {e}"));
                            return report;
                        }
                    };
                    match verify(&locks, &mut c, &mut slots, &mut report, true) {
                        Ok(()) => {
                            report.outages.push(down.elapsed());
                            if report.primaries.last() != Some(&port) {
                                report.primaries.push(port);
                            }
                            progress.moved_to(port);
                            con = c;
                            break;
                        }
                        Err(e) if down.elapsed() > RECONNECT_DEADLINE => {
                            report.violations.push(format!("no primary answered: {e}"));
                            return report;
                        }
                        Err(_) => thread::sleep(Duration::from_millis(20)),
                    }
                }
            }
            Err(e) => {
                report.violations.push(format!("key {k}: {e}"));
                slot.pending = None;
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    // No failover now: every key must be exactly as acknowledged.
    if let Err(e) = verify(&locks, &mut con, &mut slots, &mut report, false) {
        report.violations.push(format!("final check: {e}"));
    }
    report
}

/// Waits until every worker has had `grants` grants acknowledged by the primary on `port`.
fn wait_all_granted_on(progress: &[Arc<Progress>], port: u16, grants: u64) {
    testkit::wait_until(Duration::from_secs(20), || {
        progress.iter().all(|p| {
            let (on, n) = p.get();
            on == port && n >= grants
        })
    })
    .unwrap_or_else(|_| {
        let seen: Vec<_> = progress.iter().map(|p| p.get()).collect();
        panic!("workers did not resume on primary {port}: (port, grants) = {seen:?}")
    });
}

fn failovers(kind: testkit::Kind, durable: bool, rounds: usize) {
    let started = Instant::now();
    let mut group = SentinelGroup::start(kind);
    let setup = started.elapsed();
    let stop = Arc::new(AtomicBool::new(false));
    let progress: Vec<Arc<Progress>> = (0..WORKERS).map(|_| Arc::default()).collect();
    let workers: Vec<_> = progress
        .iter()
        .enumerate()
        .map(|(w, p)| {
            let (urls, stop, p) = (group.sentinel_urls(), stop.clone(), p.clone());
            thread::spawn(move || worker(w, urls, durable, stop, p))
        })
        .collect();
    let mut primary = group.agreed_primary_port().expect("a primary");
    let mut timings = Vec::new();
    for _ in 0..rounds {
        // Every worker is working on this primary before it dies.
        wait_all_granted_on(&progress, primary, 20);
        let index = group.node_index(primary);
        let killed = Instant::now();
        group.kill(index);
        let new = group.wait_failover(primary, Duration::from_secs(30));
        let failed_over = killed.elapsed();
        wait_all_granted_on(&progress, new, 1);
        let resumed = killed.elapsed();
        // The killed node comes back, empty, as a replica of the new primary, and the
        // sentinels see it before the next kill, so any replica can be elected.
        group.restart_as_replica(index, new);
        group.wait_stable(new);
        timings.push((failed_over, resumed));
        primary = new;
    }
    wait_all_granted_on(&progress, primary, 20);
    stop.store(true, Ordering::Relaxed);
    let reports: Vec<Report> = workers
        .into_iter()
        .map(|h| h.join().expect("worker"))
        .collect();

    let sum = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    let lost: Vec<&String> = reports.iter().flat_map(|r| &r.lost_grants).collect();
    let violations: Vec<&String> = reports.iter().flat_map(|r| &r.violations).collect();
    let ms = |d: &Duration| d.as_millis();
    println!(
        "{} ({}), durability {}: {rounds} failovers in {:.1} s (setup {:.1} s); \
         kill -> sentinels agree on the new primary: {:?} ms; kill -> every worker granted there: {:?} ms",
        kind.name(),
        group.sentinel_command(),
        if durable { "WAIT 1" } else { "off" },
        started.elapsed().as_secs_f64(),
        setup.as_secs_f64(),
        timings.iter().map(|t| ms(&t.0)).collect::<Vec<_>>(),
        timings.iter().map(|t| ms(&t.1)).collect::<Vec<_>>(),
    );
    println!(
        "  {} grants and {} releases acknowledged; {} grants refused by WAIT; {} cut-off calls took effect; \
         lost grants: {}; undone releases: {}; token-order and state violations: {}",
        sum(|r| r.grants),
        sum(|r| r.releases),
        sum(|r| r.not_replicated),
        sum(|r| r.in_flight_applied),
        lost.len(),
        sum(|r| r.undone_releases),
        violations.len(),
    );
    for l in &lost {
        println!("  lost: {l}");
    }
    assert!(violations.is_empty(), "violations: {violations:#?}");
    for (w, r) in reports.iter().enumerate() {
        assert_eq!(
            r.primaries.len(),
            rounds + 1,
            "worker {w} worked on primaries {:?}: it must resume on each new one",
            r.primaries
        );
        assert!(r.outages.len() >= rounds, "worker {w}: {:?}", r.outages);
    }
    if durable {
        assert!(
            lost.is_empty(),
            "with WAIT 1, acknowledged grants were lost: {lost:#?}"
        );
    }
}

server_tests! {
    /// Five failovers with durability: every acknowledged grant is on the new primary.
    fn durable_grants_survive_five_sentinel_failovers(kind: Kind) {
        failovers(kind, true, 5);
    }

    /// Three failovers without durability: losses are possible and counted; tokens stay ordered.
    fn without_durability_failovers_may_lose_grants_but_tokens_stay_ordered(kind: Kind) {
        failovers(kind, false, 3);
    }
}
