//! `mailherd render haproxy`, `render postfix-gateway` and `render dns`, run
//! as the real binary on generated configs; the output is checked by the
//! real programs: `haproxy -c`, Postfix (`postconf`, `postmap`, `postfix
//! check` in a temporary config and queue directory) and `named-checkzone`.
//! Nothing is started and nothing of the host changes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{mailherd, text, MEMBERS};

/// The node and a local floating IP; [`common::MEMBERS`] follows.
const NODE: &str = r#"[node]
name = "n1"
data_dir = "/var/lib/mailherd"

[cluster]
name = "mail"

[floating_ip]
driver = "local"
address = "192.0.2.100/24"
interface = "eth0"
"#;

const GATEWAY: &str = r#"
[gateway]
domains = ["example.net", "example.org"]
hostname = "mx2.example.net"
address = "192.0.2.25"
fallback_relays = ["[relay.example.com]:2525", "backup.example.com"]
maximal_queue_lifetime_s = 172800
bounce_queue_lifetime_s = 86400
"#;

const DNS: &str = r#"
[dns]
mail_host = "mail.example.net"
node_domain = "nodes.example.net"
spf = "v=spf1 mx -all"
"#;

struct Dir {
    directory: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            directory: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.directory.path().join(name)
    }

    /// Writes NODE, MEMBERS and `extra` as mailherd.toml; returns its path.
    fn config(&self, extra: &str) -> PathBuf {
        let path = self.path("mailherd.toml");
        std::fs::write(&path, format!("{NODE}{MEMBERS}{extra}")).unwrap();
        path
    }
}

/// `mailherd render WHAT --config CONFIG`: its standard output, asserting
/// success.
fn render(what: &str, config: &Path) -> String {
    let output = mailherd(&["render", what, "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8(output.stdout).unwrap()
}

fn assert_contains(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            haystack.contains(needle),
            "{needle:?} missing from:\n{haystack}"
        );
    }
}

fn require(program: &str, package: &str) {
    assert!(
        Path::new(program).exists(),
        "{program} is missing (Debian package {package}): run scripts/install-deps.sh"
    );
}

/// `haproxy -c -f FILE` accepts `rendered`.
fn assert_haproxy_accepts(dir: &Dir, rendered: &str) {
    require("/usr/sbin/haproxy", "haproxy");
    let path = dir.path("haproxy.cfg");
    std::fs::write(&path, rendered).unwrap();
    let checked = Command::new("/usr/sbin/haproxy")
        .args(["-c", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "haproxy -c refused the rendered file: {}\n{rendered}",
        text(&checked)
    );
}

#[test]
fn the_rendered_haproxy_cfg_passes_haproxy_c_and_checks_master() {
    let dir = Dir::new();
    let config = dir.config("\n[haproxy]\ntcp_services = [\"smtp\", \"imaps\"]\n");
    let rendered = render("haproxy", &config);
    assert_contains(
        &rendered,
        &[
            "frontend webmail_http\n    bind 0.0.0.0:80\n    mode http\n",
            "backend webmail_http\n",
            "    option httpchk GET /master\n",
            "    http-check expect status 200\n",
            // The seed's timing, as the defaults.
            "    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions\n",
            "    server n1 192.0.2.11:80 check port 7401\n",
            "    server n2 192.0.2.12:80 check port 7401\n",
            "frontend smtp\n    bind 0.0.0.0:25\n    mode tcp\n",
            "    server n1 192.0.2.11:25 check port 7401\n",
            "frontend imaps\n    bind 0.0.0.0:993\n",
            "    server n2 192.0.2.12:993 check port 7401\n",
            "    timeout client 1800s\n",
        ],
    );
    // Every backend checks /master; the witness serves nothing.
    assert_eq!(
        rendered.matches("option httpchk GET /master").count(),
        rendered.matches("\nbackend ").count()
    );
    assert_eq!(rendered.matches("\nbackend ").count(), 3);
    assert!(!rendered.contains("192.0.2.13"), "{rendered}");
    assert!(!rendered.contains("webmail_https"), "{rendered}");
    assert_haproxy_accepts(&dir, &rendered);

    // Passthrough by SNI, the check timing adjusted.
    let config = dir.config(
        "\n[haproxy]\ntls = \"passthrough\"\nsni = [\"mail.example.net\", \"webmail.example.net\"]\n\
         check_inter_ms = 500\ncheck_fall = 2\ncheck_rise = 1\n",
    );
    let rendered = render("haproxy", &config);
    assert_contains(
        &rendered,
        &[
            "frontend webmail_https\n    bind 0.0.0.0:443\n    mode tcp\n",
            "    tcp-request content accept if { req_ssl_hello_type 1 }\n",
            "    use_backend webmail_https if { req.ssl_sni -i mail.example.net webmail.example.net }\n",
            "backend webmail_https\n    mode tcp\n",
            "    server n1 192.0.2.11:443 check port 7401\n",
            "    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions\n",
        ],
    );
    assert_haproxy_accepts(&dir, &rendered);

    // Termination with a certificate HAProxy can load: the cluster CA's
    // certificate and key as one PEM.
    let output = mailherd(&["tls", "init-ca", "--dir", dir.path("ca").to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
    let pem = dir.path("webmail.pem");
    std::fs::write(
        &pem,
        std::fs::read_to_string(dir.path("ca/ca.pem")).unwrap()
            + &std::fs::read_to_string(dir.path("ca/ca.key")).unwrap(),
    )
    .unwrap();
    let config = dir.config(&format!(
        "\n[haproxy]\ntls = \"terminate\"\ncrt = \"{}\"\n",
        pem.display()
    ));
    let rendered = render("haproxy", &config);
    assert_contains(
        &rendered,
        &[
            &format!("    bind 0.0.0.0:443 ssl crt {}\n", pem.display()),
            "    http-request redirect scheme https unless { ssl_fc }\n",
            "    server n1 192.0.2.11:80 check port 7401\n",
        ],
    );
    assert_haproxy_accepts(&dir, &rendered);
}

#[test]
fn the_gateway_main_cf_is_accepted_by_postfix_and_relays_to_the_floating_ip() {
    require("/usr/sbin/postconf", "postfix");
    let dir = Dir::new();
    let config = dir.config(GATEWAY);
    // Postfix's own files (postfix-files, dynamicmaps.cf, master.cf) beside
    // the rendered main.cf, as in /etc/postfix.
    let etc = dir.path("etc-postfix");
    let copied = Command::new("cp")
        .args(["-a", "/etc/postfix/."])
        .arg(&etc)
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", text(&copied));
    let output = mailherd(&[
        "render",
        "postfix-gateway",
        "--config",
        config.to_str().unwrap(),
        "--output-dir",
        etc.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let main_cf = std::fs::read_to_string(etc.join("main.cf")).unwrap();
    assert_contains(
        &main_cf,
        &[
            "\nmyhostname = mx2.example.net\n",
            "\nrelay_domains = example.net, example.org\n",
            "\nsmtp_fallback_relay = [relay.example.com]:2525, backup.example.com\n",
            "\nsoft_bounce = yes\n",
            "\nmaximal_queue_lifetime = 172800s\n",
            "\nbounce_queue_lifetime = 86400s\n",
            "\nminimal_backoff_time = 60s\n",
        ],
    );
    let transport = std::fs::read_to_string(etc.join("transport")).unwrap();
    assert_contains(
        &transport,
        &[
            "\nexample.net relay:[192.0.2.100]:25\n",
            "\nexample.org relay:[192.0.2.100]:25\n",
        ],
    );

    // Postfix reads every parameter, and knows each one (an unknown name
    // would be warned about as unused).
    let postconf = |arguments: &[&str]| {
        let output = Command::new("/usr/sbin/postconf")
            .arg("-c")
            .arg(&etc)
            .args(arguments)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        assert!(
            output.stderr.is_empty(),
            "postconf warned: {}",
            text(&output)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let set = postconf(&["-n"]);
    assert_contains(&set, &["soft_bounce = yes\n", "relay_domains = "]);
    assert_eq!(
        postconf(&["-h", "smtp_fallback_relay"]).trim(),
        "[relay.example.com]:2525, backup.example.com"
    );
    assert_eq!(postconf(&["-h", "soft_bounce"]).trim(), "yes");
    // The transport map is found where main.cf names it.
    let transport_maps = postconf(&["-hx", "transport_maps"]);
    let looked_up = Command::new("/usr/sbin/postmap")
        .arg("-c")
        .arg(&etc)
        .args(["-q", "example.org", transport_maps.trim()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&looked_up.stdout).trim(),
        "relay:[192.0.2.100]:25",
        "{}",
        text(&looked_up)
    );

    // `postfix check` on this config, its queue and data in the temp dir.
    std::fs::create_dir_all(dir.path("spool")).unwrap();
    std::fs::create_dir_all(dir.path("data")).unwrap();
    std::fs::write(
        etc.join("main.cf"),
        format!(
            "{main_cf}queue_directory = {}\ndata_directory = {}\n",
            dir.path("spool").display(),
            dir.path("data").display()
        ),
    )
    .unwrap();
    let checked = Command::new("/usr/sbin/postfix")
        .arg("-c")
        .arg(&etc)
        .arg("check")
        .output()
        .unwrap();
    assert!(
        checked.status.success() && checked.stderr.is_empty(),
        "postfix check: {}",
        text(&checked)
    );
}

#[test]
fn render_dns_has_mx_records_with_priorities_and_a_valid_zone() {
    let dir = Dir::new();
    let config = dir.config(&format!("{GATEWAY}{DNS}"));
    let rendered = render("dns", &config);
    assert_contains(
        &rendered,
        &[
            "\nexample.net. 300 IN MX 10 mail.example.net.\n",
            "\nexample.net. 300 IN MX 20 mx2.example.net.\n",
            "\nexample.org. 300 IN MX 10 mail.example.net.\n",
            "\nexample.org. 300 IN MX 20 mx2.example.net.\n",
            "\nexample.net. 300 IN TXT \"v=spf1 mx -all\"\n",
            "\nmail.example.net. 300 IN A 192.0.2.100\n",
            "\nmx2.example.net. 300 IN A 192.0.2.25\n",
            "\nn1.nodes.example.net. 300 IN A 192.0.2.11\n",
            "\nn2.nodes.example.net. 300 IN A 192.0.2.12\n",
        ],
    );
    assert!(!rendered.contains("w1."), "a witness serves no mail");

    // A zone around the records that belong to example.net passes BIND's
    // checker.
    require("/usr/bin/named-checkzone", "bind9-utils");
    let records: String = rendered
        .lines()
        .filter(|line| {
            line.starts_with(';')
                || line
                    .split_whitespace()
                    .next()
                    .is_some_and(|name| name.ends_with("example.net."))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let zone = format!(
        "$TTL 300\n\
         example.net. IN SOA ns1.example.net. hostmaster.example.net. 1 3600 600 604800 300\n\
         example.net. IN NS ns1.example.net.\n\
         ns1.example.net. IN A 192.0.2.53\n\
         {records}"
    );
    let path = dir.path("example.net.zone");
    std::fs::write(&path, &zone).unwrap();
    let checked = Command::new("/usr/bin/named-checkzone")
        .arg("example.net")
        .arg(&path)
        .output()
        .unwrap();
    let report = text(&checked);
    assert!(checked.status.success(), "{report}\n{zone}");
    assert!(report.contains("OK"), "{report}");
}

#[test]
fn bad_configs_give_clear_errors() {
    let dir = Dir::new();
    // A section that is missing.
    let config = dir.config("");
    for (what, section) in [
        ("haproxy", "[haproxy]"),
        ("postfix-gateway", "[gateway]"),
        ("dns", "[dns]"),
    ] {
        let output = mailherd(&["render", what, "--config", config.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("the config has no {section} section")),
            "{stderr}"
        );
    }

    // A broken value: file, line and key.
    let config = dir.config(&GATEWAY.replace("mx2.example.net", "mx2 example"));
    let line = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .position(|line| line.starts_with("hostname = "))
        .unwrap()
        + 1;
    let output = mailherd(&[
        "render",
        "postfix-gateway",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:{line}: gateway.hostname: `mx2 example` is not a host name",
            config.display()
        )),
        "{stderr}"
    );

    // Nowhere to relay to: no floating IP and no relay_host.
    let without_floating_ip = format!("{NODE}{MEMBERS}{GATEWAY}").replace(
        "[floating_ip]\ndriver = \"local\"\naddress = \"192.0.2.100/24\"\ninterface = \"eth0\"\n",
        "",
    );
    let path = dir.path("no-fip.toml");
    std::fs::write(&path, without_floating_ip).unwrap();
    let output = mailherd(&[
        "render",
        "postfix-gateway",
        "--config",
        path.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("neither gateway.relay_host nor a [floating_ip]"),
        "{}",
        text(&output)
    );
}
