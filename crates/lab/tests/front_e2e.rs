//! HAProxy and a Postfix mail gateway in front of a real lab cluster
//! (`mailherd-lab up --haproxy`, `--gateway`), both configured by
//! `mailherd render`: traffic through HAProxy follows the master through a
//! power failure, and mail sent to the gateway while the master is down is
//! queued there and delivered after the failover, none of it bounced. Root
//! needed; runs its own lab (`mg-` namespaces, /var/lib/mg).

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{only_master, text, LabEnv};

static LAB: LabEnv = LabEnv {
    prefix: "mg",
    dir: "/var/lib/mg",
    lock: &LOCK,
};
static LOCK: Mutex<()> = Mutex::new(());

/// A failover, HAProxy's checks (500 ms, fall 2, rise 1) included.
const FAILOVER_WAIT: Duration = Duration::from_secs(30);
/// Mail through the gateway's queue: retries every 2 to 5 s.
const MAIL_WAIT: Duration = Duration::from_secs(60);

/// [`common::wait_for`] with this file's diagnostics.
fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    common::wait_for(what, timeout, check, diagnostics)
}

/// The lab's status and the end of every node's and agent's log.
fn diagnostics() -> String {
    LAB.diagnostics(&["node.log", "agent.log"], 15)
}

/// One SMTP banner read through `via` (haproxy, gateway, floating-ip).
fn banner(via: &str) -> Option<String> {
    let output = LAB.run(&["probe", "--via", via, "--timeout-ms", "1000"]);
    output
        .status
        .success()
        .then(|| text(&output.stdout).trim().to_string())
}

/// Sends one message to the gateway; it must take it (250) at once, master
/// or not.
fn send_to_gateway(subject: &str) {
    let reply = LAB.ok(&["mail", "send", "--via", "gateway", "--subject", subject]);
    assert!(
        reply.starts_with("250"),
        "the gateway took {subject}: {reply}"
    );
}

#[test]
fn traffic_through_haproxy_follows_the_master_through_a_power_failure() {
    let _lab = LAB.exclusive();
    LAB.ok(&["up", "--nodes", "3", "--stack", "banner", "--haproxy"]);
    let lab_status = LAB.status();
    assert_eq!(
        lab_status["haproxy"]["namespace"], "mg-haproxy",
        "{lab_status:#}"
    );
    assert_eq!(lab_status["haproxy"]["serving"], true, "{lab_status:#}");
    let haproxy_cfg = std::fs::read_to_string("/var/lib/mg/haproxy/haproxy.cfg").unwrap();
    assert!(
        haproxy_cfg.contains("option httpchk GET /master"),
        "{haproxy_cfg}"
    );

    let master = wait_for("exactly one master", FAILOVER_WAIT, || {
        only_master(&LAB.status())
    });
    // HAProxy passes SMTP to the master's own address, not the floating IP:
    // the banner names the node that answered.
    let seen = wait_for("the master's banner through HAProxy", FAILOVER_WAIT, || {
        banner("haproxy").filter(|banner| banner.contains(&format!("220 {master}.lab.test")))
    });
    // Every connection goes to the master only, once HAProxy's first
    // checks have marked the backups down: a freshly started HAProxy counts
    // every server up until `fall` checks failed (1 s with the rendered
    // `inter 500ms fall 2`), so right after `up` a connection may still be
    // sent to a backup, which refuses it.
    wait_for(
        "HAProxy to send every connection to the master",
        FAILOVER_WAIT,
        || {
            (0..10)
                .all(|_| banner("haproxy").as_deref() == Some(seen.as_str()))
                .then_some(())
        },
    );

    LAB.ok(&["fail", &master, "--mode", "power"]);
    let new_master = wait_for("another node as the only master", FAILOVER_WAIT, || {
        only_master(&LAB.status()).filter(|name| *name != master)
    });
    wait_for(
        "the new master's banner through HAProxy",
        FAILOVER_WAIT,
        || {
            banner("haproxy")
                .filter(|banner| banner.contains(&format!("220 {new_master}.lab.test")))
        },
    );
    // The new master can answer (rise 1) before HAProxy has marked the dead
    // one down (fall 2, each check waiting up to 500 ms): until then a
    // connection may go to the dead node. Then every one reaches the new
    // master.
    let expected = format!("220 {new_master}.lab.test");
    wait_for(
        "HAProxy to send every connection to the new master",
        FAILOVER_WAIT,
        || {
            (0..10)
                .all(|_| banner("haproxy").is_some_and(|through| through.contains(&expected)))
                .then_some(())
        },
    );
}

#[test]
fn the_gateway_delivers_every_message_sent_while_the_master_was_down() {
    let _lab = LAB.exclusive();
    LAB.ok(&["up", "--nodes", "3", "--stack", "mail", "--gateway"]);
    let lab_status = LAB.status();
    assert_eq!(
        lab_status["gateway"]["namespace"], "mg-gw",
        "{lab_status:#}"
    );
    assert_eq!(lab_status["gateway"]["serving"], true, "{lab_status:#}");
    let main_cf = std::fs::read_to_string("/var/lib/mg/gateway/etc-postfix/main.cf").unwrap();
    assert!(main_cf.contains("\nsoft_bounce = yes\n"), "{main_cf}");
    assert!(banner("gateway").is_some_and(|banner| banner.starts_with("220 gw.lab.test")));

    let run = std::process::id();
    let before = format!("gw-before-{run}");
    send_to_gateway(&before);
    wait_for(
        "the first message, relayed to the master",
        MAIL_WAIT,
        || LAB.subjects().filter(|subjects| subjects.contains(&before)),
    );

    let master = wait_for("exactly one master", FAILOVER_WAIT, || {
        only_master(&LAB.status())
    });
    LAB.ok(&["fail", &master, "--mode", "power"]);
    // Right after the power cut no node serves the floating IP yet (the
    // lease has to run out first): the gateway takes the mail and queues it.
    let during: Vec<String> = (1..=3).map(|i| format!("gw-outage-{i}-{run}")).collect();
    for subject in &during {
        send_to_gateway(subject);
    }
    let new_master = wait_for("another node as the only master", FAILOVER_WAIT, || {
        only_master(&LAB.status()).filter(|name| *name != master)
    });
    let after = format!("gw-after-{run}");
    send_to_gateway(&after);
    // Ask for the deferred mail at once rather than at the next retry.
    LAB.ok(&["exec", "gw", "--", "postqueue", "-f"]);

    let mut expected = during.clone();
    expected.push(before);
    expected.push(after);
    let arrived = wait_for("every message in the mailbox", MAIL_WAIT, || {
        LAB.subjects()
            .filter(|subjects| expected.iter().all(|subject| subjects.contains(subject)))
    });
    for subject in &expected {
        assert_eq!(
            arrived.iter().filter(|s| *s == subject).count(),
            1,
            "{subject} arrived exactly once: {arrived:?}"
        );
    }

    // The outage was real: the gateway could not deliver at first and kept
    // the mail; it bounced nothing and holds nothing now.
    let log = std::fs::read_to_string("/var/lib/mg/gateway/postfix.log").unwrap();
    assert!(
        log.contains("status=deferred"),
        "the gateway deferred mail while {master} was down (new master {new_master}):\n{log}"
    );
    assert!(!log.contains("status=bounced"), "nothing bounced:\n{log}");
    let queue = wait_for("the gateway's queue to empty", MAIL_WAIT, || {
        let listing = LAB.ok(&["exec", "gw", "--", "postqueue", "-j"]);
        listing.trim().is_empty().then_some(listing)
    });
    assert!(queue.is_empty());
}
