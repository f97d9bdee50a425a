//! The JSON documents of the simulated API, spelled as the reference
//! spells them. Built with `json!` from the world rather than from the
//! client's types, so that a shape mistake shared by client and simulator
//! cannot hide: the tests here compare keys with the reference.

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::world::{WorldFloatingIp, WorldServer, WorldVolume};

/// Hetzner's timestamps: RFC 3339, whole seconds, `+00:00`.
pub(crate) fn timestamp(at: OffsetDateTime) -> String {
    let at = at.replace_nanosecond(0).unwrap_or(at);
    let formatted = at
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string());
    match formatted.strip_suffix('Z') {
        Some(stem) => format!("{stem}+00:00"),
        None => formatted,
    }
}

pub(crate) fn now_timestamp() -> String {
    timestamp(OffsetDateTime::now_utc())
}

/// A location object. The known Hetzner locations get their real
/// details; any other name is simulated with neutral ones.
pub(crate) fn location(name: &str) -> Value {
    let known = [
        (
            1,
            "fsn1",
            "Falkenstein DC Park 1",
            "DE",
            "Falkenstein",
            50.47612,
            12.370071,
            "eu-central",
        ),
        (
            2,
            "nbg1",
            "Nuremberg DC Park 1",
            "DE",
            "Nuremberg",
            49.452102,
            11.076665,
            "eu-central",
        ),
        (
            3,
            "hel1",
            "Helsinki DC Park 1",
            "FI",
            "Helsinki",
            60.169855,
            24.938379,
            "eu-central",
        ),
        (
            4,
            "ash",
            "Ashburn, VA",
            "US",
            "Ashburn, VA",
            39.043757,
            -77.487442,
            "us-east",
        ),
        (
            5,
            "hil",
            "Hillsboro, OR",
            "US",
            "Hillsboro, OR",
            45.54222,
            -122.951924,
            "us-west",
        ),
        (
            6,
            "sin",
            "Singapore",
            "SG",
            "Singapore",
            1.283333,
            103.833333,
            "ap-southeast",
        ),
    ];
    let (id, name, description, country, city, latitude, longitude, network_zone) = known
        .iter()
        .copied()
        .find(|entry| entry.1 == name)
        .unwrap_or((
            99,
            name,
            "Simulated location",
            "DE",
            "Simulated",
            0.0,
            0.0,
            "eu-central",
        ));
    json!({
        "id": id,
        "name": name,
        "description": description,
        "country": country,
        "city": city,
        "latitude": latitude,
        "longitude": longitude,
        "network_zone": network_zone,
    })
}

pub(crate) fn floating_ip(floating_ip: &WorldFloatingIp, created: &str) -> Value {
    let ip_type = if floating_ip.ip.contains(':') {
        "ipv6"
    } else {
        "ipv4"
    };
    json!({
        "id": floating_ip.id,
        "name": floating_ip.name,
        "description": floating_ip.description,
        "ip": floating_ip.ip,
        "type": ip_type,
        "server": floating_ip.server,
        "dns_ptr": [{"ip": floating_ip.ip, "dns_ptr": format!("static.{}.clients.your-server.de", floating_ip.ip)}],
        "home_location": location(&floating_ip.home_location),
        "blocked": false,
        "protection": {"delete": false},
        "labels": {},
        "created": created,
    })
}

pub(crate) fn volume(volume: &WorldVolume, created: &str) -> Value {
    json!({
        "id": volume.id,
        "name": volume.name,
        "server": volume.server,
        "status": "available",
        "location": location(&volume.location),
        "size": volume.size,
        "format": volume.format,
        "linux_device": volume.linux_device,
        "protection": {"delete": false},
        "labels": {},
        "created": created,
    })
}

/// What a server document shows besides the server itself.
pub(crate) struct ServerContext<'a> {
    pub(crate) created: &'a str,
    /// An action on the server is running.
    pub(crate) locked: bool,
    pub(crate) volumes: Vec<u64>,
    pub(crate) floating_ips: Vec<u64>,
}

pub(crate) fn server(server: &WorldServer, context: ServerContext<'_>) -> Value {
    let datacenter_suffix = match server.location.as_str() {
        "fsn1" => "dc14",
        "nbg1" => "dc3",
        "hel1" => "dc2",
        _ => "dc1",
    };
    json!({
        "id": server.id,
        "name": server.name,
        "status": server.status,
        "created": context.created,
        "public_net": {
            "ipv4": server.ipv4.as_ref().map(|ip| json!({"ip": ip, "blocked": false, "dns_ptr": format!("static.{ip}.clients.your-server.de")})),
            "ipv6": null,
            "floating_ips": context.floating_ips,
            "firewalls": [],
        },
        "private_net": [],
        "datacenter": {
            "id": 1,
            "name": format!("{}-{datacenter_suffix}", server.location),
            "description": format!("{} {datacenter_suffix}", server.location),
            "location": location(&server.location),
        },
        "image": null,
        "iso": null,
        "rescue_enabled": false,
        "locked": context.locked,
        "backup_window": null,
        "outgoing_traffic": 0,
        "ingoing_traffic": 0,
        "included_traffic": 21990232555520u64,
        "protection": {"delete": false, "rebuild": false},
        "labels": {},
        "volumes": context.volumes,
        "load_balancers": [],
        "primary_disk_size": 40,
        "placement_group": null,
    })
}

/// An action's fields that are not computed at render time.
pub(crate) struct ActionView<'a> {
    pub(crate) id: u64,
    pub(crate) command: &'a str,
    /// `running`, `success` or `error`.
    pub(crate) status: &'a str,
    pub(crate) progress: u32,
    pub(crate) started: &'a str,
    pub(crate) finished: Option<&'a str>,
    /// `(code, message)` of an action that ended in error.
    pub(crate) error: Option<(&'a str, &'a str)>,
    /// `(id, type)` of each resource.
    pub(crate) resources: Vec<(u64, &'static str)>,
}

pub(crate) fn action(view: ActionView<'_>) -> Value {
    json!({
        "id": view.id,
        "command": view.command,
        "status": view.status,
        "progress": view.progress,
        "started": view.started,
        "finished": view.finished,
        "error": view.error.map(|(code, message)| json!({"code": code, "message": message})),
        "resources": view.resources.iter().map(|(id, kind)| json!({"id": id, "type": kind})).collect::<Vec<_>>(),
    })
}

/// `{"error":{"code","message","details"}}`.
pub(crate) fn error(code: &str, message: &str, details: Value) -> Value {
    json!({"error": {"code": code, "message": message, "details": details}})
}

/// One page of a list: `{<key>: [...], "meta": {"pagination": {...}}}`.
pub(crate) fn page(key: &str, items: Vec<Value>, page: u64, per_page: u64) -> Value {
    let total = items.len() as u64;
    let last_page = total.div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page);
    let items: Vec<Value> = items
        .into_iter()
        .skip(usize::try_from(start).unwrap_or(usize::MAX))
        .take(usize::try_from(per_page).unwrap_or(usize::MAX))
        .collect();
    let mut document = serde_json::Map::new();
    document.insert(key.to_string(), Value::Array(items));
    document.insert(
        "meta".to_string(),
        json!({"pagination": {
            "page": page,
            "per_page": per_page,
            "previous_page": (page > 1).then(|| (page - 1).min(last_page)),
            "next_page": (page < last_page).then_some(page + 1),
            "last_page": last_page,
            "total_entries": total,
        }}),
    );
    Value::Object(document)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn keys(value: &Value) -> BTreeSet<&str> {
        value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect()
    }

    fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
        names.iter().copied().collect()
    }

    /// reference.md: `{"floating_ip":{id,name,description,ip,type,server(int|null),dns_ptr,home_location,blocked,protection,labels,created}}`.
    #[test]
    fn floating_ip_has_exactly_the_reference_keys() {
        let floating_ip = WorldFloatingIp {
            id: 1,
            ip: "10.0.0.1".to_string(),
            name: "fip".to_string(),
            description: None,
            home_location: "fsn1".to_string(),
            server: None,
        };
        let rendered = super::floating_ip(&floating_ip, "2024-01-01T00:00:00+00:00");
        assert_eq!(
            keys(&rendered),
            set(&[
                "id",
                "name",
                "description",
                "ip",
                "type",
                "server",
                "dns_ptr",
                "home_location",
                "blocked",
                "protection",
                "labels",
                "created"
            ])
        );
        assert_eq!(rendered["server"], Value::Null);
        assert_eq!(rendered["type"], "ipv4");
        assert_eq!(rendered["home_location"]["name"], "fsn1");
    }

    /// reference.md: `{"volume":{id,name,server|null,status,location,size,format,linux_device,...}}`.
    #[test]
    fn volume_has_the_reference_keys() {
        let volume = WorldVolume {
            id: 7,
            name: "data".to_string(),
            location: "nbg1".to_string(),
            size: 10,
            server: Some(2),
            linux_device: "/dev/disk/by-id/scsi-0HC_Volume_7".to_string(),
            format: None,
        };
        let rendered = super::volume(&volume, "2024-01-01T00:00:00+00:00");
        let reference = set(&[
            "id",
            "name",
            "server",
            "status",
            "location",
            "size",
            "format",
            "linux_device",
        ]);
        assert!(reference.is_subset(&keys(&rendered)), "{rendered}");
        assert_eq!(rendered["server"], 2);
        assert_eq!(rendered["format"], Value::Null);
    }

    /// reference.md: `{"action":{id,command,status,progress,started,finished,error:{code,message}|null,resources:[{id,type}]}}`.
    #[test]
    fn action_has_exactly_the_reference_keys() {
        let running = action(ActionView {
            id: 3,
            command: "attach_volume",
            status: "running",
            progress: 0,
            started: "2024-01-01T00:00:00+00:00",
            finished: None,
            error: None,
            resources: vec![(7, "volume"), (2, "server")],
        });
        assert_eq!(
            keys(&running),
            set(&[
                "id",
                "command",
                "status",
                "progress",
                "started",
                "finished",
                "error",
                "resources"
            ])
        );
        assert_eq!(running["error"], Value::Null);
        assert_eq!(keys(&running["resources"][0]), set(&["id", "type"]));
        let failed = action(ActionView {
            status: "error",
            error: Some(("action_failed", "it broke")),
            finished: Some("2024-01-01T00:00:03+00:00"),
            id: 3,
            command: "attach_volume",
            progress: 100,
            started: "2024-01-01T00:00:00+00:00",
            resources: vec![],
        });
        assert_eq!(keys(&failed["error"]), set(&["code", "message"]));
    }

    /// reference.md: `meta.pagination{page,per_page,previous_page,next_page,last_page,total_entries}`.
    #[test]
    fn pages_have_the_reference_pagination() {
        let items: Vec<Value> = (1..=60).map(|id| json!({"id": id})).collect();
        let first = super::page("volumes", items.clone(), 1, 50);
        assert_eq!(keys(&first), set(&["volumes", "meta"]));
        let pagination = &first["meta"]["pagination"];
        assert_eq!(
            keys(pagination),
            set(&[
                "page",
                "per_page",
                "previous_page",
                "next_page",
                "last_page",
                "total_entries"
            ])
        );
        assert_eq!(first["volumes"].as_array().unwrap().len(), 50);
        assert_eq!(pagination["previous_page"], Value::Null);
        assert_eq!(pagination["next_page"], 2);
        assert_eq!(pagination["last_page"], 2);
        assert_eq!(pagination["total_entries"], 60);
        let second = super::page("volumes", items.clone(), 2, 50);
        assert_eq!(second["volumes"].as_array().unwrap().len(), 10);
        assert_eq!(second["meta"]["pagination"]["next_page"], Value::Null);
        assert_eq!(second["meta"]["pagination"]["previous_page"], 1);
        let beyond = super::page("volumes", items, 5, 50);
        assert!(beyond["volumes"].as_array().unwrap().is_empty());
        let empty = super::page("volumes", Vec::new(), 1, 25);
        assert_eq!(empty["meta"]["pagination"]["last_page"], 1);
    }

    /// reference.md: `{"error":{"code","message","details"}}`.
    #[test]
    fn errors_have_the_reference_shape() {
        let rendered = error("not_found", "volume with ID 9 not found", Value::Null);
        assert_eq!(keys(&rendered), set(&["error"]));
        assert_eq!(
            keys(&rendered["error"]),
            set(&["code", "message", "details"])
        );
    }

    #[test]
    fn timestamps_look_like_hetzner_ones() {
        let at = OffsetDateTime::from_unix_timestamp(1_454_197_800).unwrap();
        assert_eq!(timestamp(at), "2016-01-30T23:50:00+00:00");
    }
}
