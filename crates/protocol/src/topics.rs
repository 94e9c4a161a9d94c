//! The topic grammar of wire protocol v1, in one place: every topic either side publishes or
//! subscribes to is built here, and every topic either side receives is parsed here.
//!
//! ```text
//! {root}/gw/{gw}/{status|heartbeat|event|request|reply|audit|csr|cert}
//! {root}/gw/{gw}/{live|clip}/{request_id}
//! {root}/pair/{claim}/{csr|result}
//! ```
//!
//! `{root}` is configurable (default `porchlight/v1`); `{gw}` is the CN of the box's
//! certificate, so a broker ACL `pattern readwrite {root}/gw/%u/#` confines each box to its
//! own subtree. Center workers may prefix their subscriptions with `$share/{group}/`.

/// The default topic root.
pub const DEFAULT_ROOT: &str = "porchlight/v1";

/// Whether `root` can be a topic root: not empty, no leading or trailing `/`, no wildcard or
/// NUL (it is the prefix of every topic a box uses, so a `#` would widen them all).
pub fn valid_root(root: &str) -> bool {
    !(root.is_empty()
        || root.starts_with('/')
        || root.ends_with('/')
        || root.contains(['+', '#', '\0']))
}

/// The leaf of a per-gateway topic with no request id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leaf {
    /// Retained online/offline status (and the last will). Box → center, QoS 1.
    Status,
    /// Health. Box → center, QoS 0.
    Heartbeat,
    /// Events with a per-box `seq`. Box → center, QoS 1.
    Event,
    /// Signed requests. Center → box, QoS 1.
    Request,
    /// Replies to requests. Box → center, QoS 1.
    Reply,
    /// Audit entries as appended. Box → center, QoS 1.
    Audit,
    /// A renewal CSR. Box → center, QoS 1.
    Csr,
    /// The answer to a renewal CSR. Center → box, QoS 1.
    Cert,
}

impl Leaf {
    /// Every leaf.
    pub const ALL: [Leaf; 8] = [
        Leaf::Status,
        Leaf::Heartbeat,
        Leaf::Event,
        Leaf::Request,
        Leaf::Reply,
        Leaf::Audit,
        Leaf::Csr,
        Leaf::Cert,
    ];

    /// The topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            Leaf::Status => "status",
            Leaf::Heartbeat => "heartbeat",
            Leaf::Event => "event",
            Leaf::Request => "request",
            Leaf::Reply => "reply",
            Leaf::Audit => "audit",
            Leaf::Csr => "csr",
            Leaf::Cert => "cert",
        }
    }

    /// The leaf named `s`.
    pub fn parse(s: &str) -> Option<Leaf> {
        Leaf::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// A stream of video for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// `live/{request_id}`: PLM1 framed, QoS 0.
    Live,
    /// `clip/{request_id}`: PLM1 framed, QoS 1, ends with a signed manifest.
    Clip,
}

impl Stream {
    /// The topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Live => "live",
            Stream::Clip => "clip",
        }
    }
}

/// The topics of one gateway under a topic root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    base: String,
}

impl Topics {
    /// Topics for gateway `gw` under `root` (e.g. `porchlight/v1`).
    pub fn new(root: &str, gw: &str) -> Topics {
        Topics {
            base: format!("{}/gw/{gw}", root.trim_end_matches('/')),
        }
    }

    /// `{root}/gw/{gw}/{leaf}`.
    pub fn leaf(&self, leaf: Leaf) -> String {
        format!("{}/{}", self.base, leaf.as_str())
    }

    /// `{root}/gw/{gw}/status` — retained, QoS 1; also the last will.
    pub fn status(&self) -> String {
        self.leaf(Leaf::Status)
    }

    /// `{root}/gw/{gw}/heartbeat` — QoS 0.
    pub fn heartbeat(&self) -> String {
        self.leaf(Leaf::Heartbeat)
    }

    /// `{root}/gw/{gw}/event` — QoS 1 via the outbox.
    pub fn event(&self) -> String {
        self.leaf(Leaf::Event)
    }

    /// `{root}/gw/{gw}/request` — center to box, QoS 1.
    pub fn request(&self) -> String {
        self.leaf(Leaf::Request)
    }

    /// `{root}/gw/{gw}/csr` — a renewal CSR (QoS 1 via the outbox; `docs/protocol.md`).
    pub fn csr(&self) -> String {
        self.leaf(Leaf::Csr)
    }

    /// `{root}/gw/{gw}/cert` — the center's answer to a renewal CSR (subscribed, QoS 1).
    pub fn cert(&self) -> String {
        self.leaf(Leaf::Cert)
    }

    /// `{root}/gw/{gw}/reply` — QoS 1 via the outbox.
    pub fn reply(&self) -> String {
        self.leaf(Leaf::Reply)
    }

    /// `{root}/gw/{gw}/audit` — QoS 1 via the outbox.
    pub fn audit(&self) -> String {
        self.leaf(Leaf::Audit)
    }

    /// `{root}/gw/{gw}/{live|clip}/{request_id}`. `request_id` has been checked against
    /// `[A-Za-z0-9_-]{1,64}` (it becomes a topic level), or is `+` in a filter.
    pub fn stream(&self, stream: Stream, request_id: &str) -> String {
        format!("{}/{}/{request_id}", self.base, stream.as_str())
    }

    /// `{root}/gw/{gw}/live/{request_id}` — QoS 0, PLM1-framed.
    pub fn live(&self, request_id: &str) -> String {
        self.stream(Stream::Live, request_id)
    }

    /// `{root}/gw/{gw}/clip/{request_id}` — QoS 1 via the outbox, PLM1-framed.
    pub fn clip(&self, request_id: &str) -> String {
        self.stream(Stream::Clip, request_id)
    }

    /// `{root}/gw/{gw}/#`: everything of this gateway.
    pub fn all(&self) -> String {
        format!("{}/#", self.base)
    }
}

/// `{root}/gw/+/{leaf}`: one leaf of every gateway (a center subscription).
pub fn every_gateway(root: &str, leaf: Leaf) -> String {
    Topics::new(root, "+").leaf(leaf)
}

/// `{root}/pair/{claim}/csr` — the enrollment CSR of a claim code.
pub fn pair_csr(root: &str, claim: &str) -> String {
    format!("{}/pair/{claim}/csr", root.trim_end_matches('/'))
}

/// `{root}/pair/{claim}/result` — the center's answer to an enrollment CSR.
pub fn pair_result(root: &str, claim: &str) -> String {
    format!("{}/pair/{claim}/result", root.trim_end_matches('/'))
}

/// `$share/{group}/{filter}` when `group` is given (MQTT 5 shared subscriptions, which
/// Mosquitto, EMQX, HiveMQ and NATS also honour under MQTT 3.1.1), else `filter`.
pub fn shared(group: Option<&str>, filter: &str) -> String {
    match group {
        Some(g) => format!("$share/{g}/{filter}"),
        None => filter.to_owned(),
    }
}

/// A received topic, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// `{root}/gw/{gw}/{leaf}`.
    Gateway {
        /// The gateway id (not yet checked against its grammar).
        gw: &'a str,
        /// The leaf.
        leaf: Leaf,
    },
    /// `{root}/gw/{gw}/{live|clip}/{request_id}`.
    Stream {
        /// The gateway id.
        gw: &'a str,
        /// Live or clip.
        stream: Stream,
        /// The request id.
        request_id: &'a str,
    },
    /// `{root}/pair/{claim}/csr`.
    PairCsr {
        /// The claim code as written in the topic.
        claim: &'a str,
    },
    /// `{root}/pair/{claim}/result`.
    PairResult {
        /// The claim code.
        claim: &'a str,
    },
}

/// Parses `topic` under `root`; `None` for anything outside the grammar (other roots, empty
/// levels, extra levels, unknown leaves).
pub fn parse<'a>(root: &str, topic: &'a str) -> Option<Parsed<'a>> {
    let rest = topic
        .strip_prefix(root.trim_end_matches('/'))?
        .strip_prefix('/')?;
    let levels: Vec<&str> = rest.split('/').collect();
    if levels.iter().any(|l| l.is_empty()) {
        return None;
    }
    match levels.as_slice() {
        ["gw", gw, leaf] => Some(Parsed::Gateway {
            gw,
            leaf: Leaf::parse(leaf)?,
        }),
        ["gw", gw, "live", id] => Some(Parsed::Stream {
            gw,
            stream: Stream::Live,
            request_id: id,
        }),
        ["gw", gw, "clip", id] => Some(Parsed::Stream {
            gw,
            stream: Stream::Clip,
            request_id: id,
        }),
        ["pair", claim, "csr"] => Some(Parsed::PairCsr { claim }),
        ["pair", claim, "result"] => Some(Parsed::PairResult { claim }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_v1_grammar() {
        let t = Topics::new("porchlight/v1/", "gw-1");
        assert_eq!(t.status(), "porchlight/v1/gw/gw-1/status");
        assert_eq!(t.heartbeat(), "porchlight/v1/gw/gw-1/heartbeat");
        assert_eq!(t.event(), "porchlight/v1/gw/gw-1/event");
        assert_eq!(t.request(), "porchlight/v1/gw/gw-1/request");
        assert_eq!(t.reply(), "porchlight/v1/gw/gw-1/reply");
        assert_eq!(t.audit(), "porchlight/v1/gw/gw-1/audit");
        assert_eq!(t.csr(), "porchlight/v1/gw/gw-1/csr");
        assert_eq!(t.cert(), "porchlight/v1/gw/gw-1/cert");
        assert_eq!(t.live("r1"), "porchlight/v1/gw/gw-1/live/r1");
        assert_eq!(t.clip("r1"), "porchlight/v1/gw/gw-1/clip/r1");
        assert_eq!(t.all(), "porchlight/v1/gw/gw-1/#");
        assert_eq!(
            every_gateway("porchlight/v1", Leaf::Heartbeat),
            "porchlight/v1/gw/+/heartbeat"
        );
        assert_eq!(pair_csr("r", "ABC"), "r/pair/ABC/csr");
        assert_eq!(pair_result("r", "ABC"), "r/pair/ABC/result");
        assert_eq!(shared(Some("c"), "r/gw/+/csr"), "$share/c/r/gw/+/csr");
        assert_eq!(shared(None, "r/gw/+/csr"), "r/gw/+/csr");
    }

    #[test]
    fn every_built_topic_parses_back() {
        let t = Topics::new("porchlight/v1", "gw-1");
        for leaf in Leaf::ALL {
            assert_eq!(
                parse("porchlight/v1", &t.leaf(leaf)),
                Some(Parsed::Gateway { gw: "gw-1", leaf })
            );
        }
        assert_eq!(
            parse("porchlight/v1", &t.clip("r9")),
            Some(Parsed::Stream {
                gw: "gw-1",
                stream: Stream::Clip,
                request_id: "r9"
            })
        );
        assert_eq!(
            parse("porchlight/v1", &pair_csr("porchlight/v1", "K")),
            Some(Parsed::PairCsr { claim: "K" })
        );
        assert_eq!(
            parse("porchlight/v1", &pair_result("porchlight/v1", "K")),
            Some(Parsed::PairResult { claim: "K" })
        );
    }

    #[test]
    fn anything_outside_the_grammar_is_refused() {
        for bad in [
            "other/gw/gw-1/status",
            "porchlight/v1x/gw/g/csr",
            "porchlight/v1/gw//status",
            "porchlight/v1/gw/gw-1/csr/x",
            "porchlight/v1/gw/gw-1/nonsense",
            "porchlight/v1/pair//csr",
            "porchlight/v1/pair/X/other",
            "porchlight/v1/gw/gw-1/live",
            "porchlight/v1/gw/gw-1/live/",
            "porchlight/v1",
            "porchlight/v1/",
        ] {
            assert_eq!(parse("porchlight/v1", bad), None, "{bad}");
        }
    }
}
