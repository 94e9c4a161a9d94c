//! A small, bounded, namespace-aware XML tree for the SOAP that cameras send.
//!
//! Everything here is pure: bytes in, a tree or an error out. The tree is built with
//! quick-xml's namespace-resolving reader and is deliberately strict about what it accepts,
//! because the bytes come from any device on the LAN (or anything pretending to be one):
//!
//! - A `<!DOCTYPE …>` is refused outright, so there is no DTD, no internal subset and therefore
//!   no entity definitions: "billion laughs" and external entities (XXE) cannot happen. The only
//!   entity references unescaped are XML's five predefined ones and character references; an
//!   unknown `&name;` is an error.
//! - The input, the number of elements, the depth, the attributes per element, and the text
//!   per element are capped ([`Limits`]); exceeding any cap is an error, never a panic and never
//!   an allocation proportional to a hostile length field.
//! - Elements are matched by (namespace URI, local name), never by prefix, so `foo:ProbeMatch`
//!   in the wrong namespace is not a ProbeMatch.
//! - Text that holds QNames (WS-Discovery `Types`) is resolved against the namespaces in scope
//!   at that element, at parse time.

use std::borrow::Cow;

use quick_xml::events::Event;
use quick_xml::name::{QName, ResolveResult};
use quick_xml::reader::NsReader;

/// Caps on what one document may contain.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest input in bytes.
    pub max_bytes: usize,
    /// Most elements in the document.
    pub max_elements: usize,
    /// Deepest nesting.
    pub max_depth: usize,
    /// Most bytes of text (after unescaping) in one element.
    pub max_text: usize,
    /// Most attributes on one element.
    pub max_attrs: usize,
}

impl Limits {
    /// For one SOAP-over-UDP datagram (WS-Discovery): at most 64 KiB.
    pub const DATAGRAM: Limits = Limits {
        max_bytes: 64 * 1024,
        max_elements: 2048,
        max_depth: 32,
        max_text: 8 * 1024,
        max_attrs: 32,
    };
    /// For one ONVIF HTTP response: at most 1 MiB (a GetProfiles of 16 profiles is ~60 KiB).
    pub const HTTP: Limits = Limits {
        max_bytes: 1024 * 1024,
        max_elements: 16 * 1024,
        max_depth: 48,
        max_text: 16 * 1024,
        max_attrs: 32,
    };
}

/// Why a document was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    /// The input is larger than [`Limits::max_bytes`].
    #[error("document of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input is not UTF-8.
    #[error("document is not UTF-8")]
    NotUtf8,
    /// The document has a DTD (`<!DOCTYPE`), which could define entities.
    #[error("document has a DOCTYPE; DTDs and entity definitions are refused")]
    Doctype,
    /// A structural cap was exceeded.
    #[error("document exceeds the {what} limit")]
    Limit {
        /// Which cap.
        what: &'static str,
    },
    /// quick-xml could not parse it (malformed, unknown entity, mismatched tags…).
    #[error("malformed XML at byte {position}: {message}")]
    Malformed {
        /// Byte offset where parsing stopped.
        position: u64,
        /// The parser's description.
        message: String,
    },
    /// No root element.
    #[error("document has no root element")]
    Empty,
}

/// A resolved qualified name: (namespace URI, local name). The namespace is empty when unbound.
pub type ExpandedName = (String, String);

#[derive(Debug, Default)]
struct Node {
    ns: String,
    local: String,
    attrs: Vec<(String, String)>,
    text: String,
    qnames: Vec<ExpandedName>,
    children: Vec<usize>,
}

/// A parsed document: an arena of elements, root at index 0.
#[derive(Debug)]
pub struct Doc {
    nodes: Vec<Node>,
}

/// One element of a [`Doc`].
#[derive(Clone, Copy, Debug)]
pub struct Elem<'a> {
    doc: &'a Doc,
    idx: usize,
}

fn malformed(reader_pos: u64, e: impl std::fmt::Display) -> XmlError {
    let mut message = e.to_string();
    message.truncate(200);
    XmlError::Malformed {
        position: reader_pos,
        message,
    }
}

/// Most whitespace-separated QName tokens resolved in one element's text.
const MAX_QNAMES: usize = 32;

impl Doc {
    /// Parses `input` under `limits`.
    pub fn parse(input: &[u8], limits: Limits) -> Result<Doc, XmlError> {
        if input.len() > limits.max_bytes {
            return Err(XmlError::TooLarge {
                len: input.len(),
                max: limits.max_bytes,
            });
        }
        let text = std::str::from_utf8(input).map_err(|_| XmlError::NotUtf8)?;
        let mut reader = NsReader::from_str(text);
        reader.config_mut().trim_text(true);
        let mut nodes: Vec<Node> = Vec::new();
        let mut stack: Vec<usize> = Vec::new();
        loop {
            let pos = reader.buffer_position();
            let (ns, event) = reader
                .read_resolved_event()
                .map_err(|e| malformed(pos, e))?;
            let (is_empty, start) = match event {
                Event::Start(s) => (false, s),
                Event::Empty(s) => (true, s),
                Event::End(_) => {
                    stack.pop();
                    continue;
                }
                Event::Text(t) => {
                    let Some(&cur) = stack.last() else {
                        return Err(malformed(pos, "text outside the root element"));
                    };
                    let s = t.unescape().map_err(|e| malformed(pos, e))?;
                    push_text(&mut nodes[cur], &s, limits)?;
                    resolve_qnames(&reader, &mut nodes[cur], &s);
                    continue;
                }
                Event::CData(c) => {
                    let Some(&cur) = stack.last() else { continue };
                    let bytes = c.into_inner();
                    let s = std::str::from_utf8(&bytes).map_err(|_| XmlError::NotUtf8)?;
                    push_text(&mut nodes[cur], s, limits)?;
                    continue;
                }
                Event::DocType(_) => return Err(XmlError::Doctype),
                Event::Eof => break,
                // Declarations, comments and processing instructions carry nothing we use.
                _ => continue,
            };
            if stack.is_empty() && !nodes.is_empty() {
                return Err(malformed(pos, "second root element"));
            }
            if nodes.len() >= limits.max_elements {
                return Err(XmlError::Limit {
                    what: "element count",
                });
            }
            if stack.len() >= limits.max_depth {
                return Err(XmlError::Limit { what: "depth" });
            }
            let ns = match ns {
                ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
                ResolveResult::Unbound => String::new(),
                ResolveResult::Unknown(p) => {
                    return Err(malformed(
                        pos,
                        format!("unbound prefix {:?}", String::from_utf8_lossy(&p)),
                    ))
                }
            };
            let local = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
            let mut attrs = Vec::new();
            for a in start.attributes() {
                let a = a.map_err(|e| malformed(pos, e))?;
                if a.key.as_ref().starts_with(b"xmlns") {
                    continue;
                }
                if attrs.len() >= limits.max_attrs {
                    return Err(XmlError::Limit {
                        what: "attribute count",
                    });
                }
                let v = a.unescape_value().map_err(|e| malformed(pos, e))?;
                if v.len() > limits.max_text {
                    return Err(XmlError::Limit {
                        what: "attribute length",
                    });
                }
                attrs.push((
                    String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned(),
                    v.into_owned(),
                ));
            }
            let idx = nodes.len();
            nodes.push(Node {
                ns,
                local,
                attrs,
                ..Node::default()
            });
            if let Some(&parent) = stack.last() {
                nodes[parent].children.push(idx);
            }
            if !is_empty {
                stack.push(idx);
            }
        }
        if nodes.is_empty() {
            return Err(XmlError::Empty);
        }
        if !stack.is_empty() {
            return Err(malformed(text.len() as u64, "unclosed element"));
        }
        Ok(Doc { nodes })
    }

    /// The root element.
    pub fn root(&self) -> Elem<'_> {
        Elem { doc: self, idx: 0 }
    }
}

fn push_text(node: &mut Node, s: &str, limits: Limits) -> Result<(), XmlError> {
    if node.text.len() + s.len() > limits.max_text {
        return Err(XmlError::Limit {
            what: "text length",
        });
    }
    node.text.push_str(s);
    Ok(())
}

/// Resolves whitespace-separated `prefix:local` tokens against the namespaces in scope. Tokens
/// that are not QNames (URLs, free text) are skipped; an unprefixed token takes the default
/// namespace.
fn resolve_qnames(reader: &NsReader<&[u8]>, node: &mut Node, text: &str) {
    for token in text.split_ascii_whitespace() {
        if node.qnames.len() >= MAX_QNAMES {
            return;
        }
        if token.contains('/') || token.matches(':').count() > 1 || token.len() > 256 {
            continue;
        }
        let (ns, local) = reader.resolve_element(QName(token.as_bytes()));
        let ns = match ns {
            ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(_) => continue,
        };
        node.qnames
            .push((ns, String::from_utf8_lossy(local.as_ref()).into_owned()));
    }
}

impl<'a> Elem<'a> {
    fn node(&self) -> &'a Node {
        &self.doc.nodes[self.idx]
    }

    /// Namespace URI ("" when none).
    pub fn ns(&self) -> &'a str {
        &self.node().ns
    }

    /// Local name.
    pub fn local(&self) -> &'a str {
        &self.node().local
    }

    /// Whether this element is `{ns}local`.
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.ns() == ns && self.local() == local
    }

    /// The element's own text (trimmed, unescaped; child elements' text not included).
    pub fn text(&self) -> &'a str {
        self.node().text.trim()
    }

    /// The element's text as owned, trimmed to at most `max` bytes on a char boundary.
    pub fn text_capped(&self, max: usize) -> String {
        cap(self.text(), max).into_owned()
    }

    /// The QNames in the element's text, resolved at parse time.
    pub fn qnames(&self) -> &'a [ExpandedName] {
        &self.node().qnames
    }

    /// An attribute by local name.
    pub fn attr(&self, local: &str) -> Option<&'a str> {
        self.node()
            .attrs
            .iter()
            .find(|(k, _)| k == local)
            .map(|(_, v)| v.as_str())
    }

    /// The child elements, in order.
    pub fn children(&self) -> impl Iterator<Item = Elem<'a>> + 'a {
        let doc = self.doc;
        self.node()
            .children
            .iter()
            .map(move |&idx| Elem { doc, idx })
    }

    /// The first child `{ns}local`.
    pub fn child(&self, ns: &str, local: &str) -> Option<Elem<'a>> {
        self.children().find(|c| c.is(ns, local))
    }

    /// Descendants in document order (not including self).
    pub fn descendants(&self) -> impl Iterator<Item = Elem<'a>> + 'a {
        // Arena indices are assigned in document order, and a subtree is contiguous.
        let doc = self.doc;
        let end = self.subtree_end();
        (self.idx + 1..end).map(move |idx| Elem { doc, idx })
    }

    fn subtree_end(&self) -> usize {
        let mut last = self.idx;
        while let Some(&c) = self.doc.nodes[last].children.last() {
            last = c;
        }
        last + 1
    }

    /// The first descendant `{ns}local`.
    pub fn find(&self, ns: &str, local: &str) -> Option<Elem<'a>> {
        self.descendants().find(|e| e.is(ns, local))
    }

    /// Every descendant `{ns}local`.
    pub fn find_all(&self, ns: &'a str, local: &'a str) -> impl Iterator<Item = Elem<'a>> + 'a {
        self.descendants().filter(move |e| e.is(ns, local))
    }

    /// Follows a path of `{ns}local` children.
    pub fn path(&self, steps: &[(&str, &str)]) -> Option<Elem<'a>> {
        let mut cur = *self;
        for (ns, local) in steps {
            cur = cur.child(ns, local)?;
        }
        Some(cur)
    }
}

/// `s` cut to at most `max` bytes on a char boundary.
pub fn cap(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Borrowed(&s[..end])
}

/// Escapes text for inclusion in an XML element or attribute.
pub fn escape(s: &str) -> Cow<'_, str> {
    quick_xml::escape::escape(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Doc, XmlError> {
        Doc::parse(s.as_bytes(), Limits::DATAGRAM)
    }

    #[test]
    fn namespaces_are_resolved_not_prefixes() {
        let d = parse(
            r#"<a:X xmlns:a="urn:a" xmlns:b="urn:b"><b:Y k="v">hi &amp; bye</b:Y><a:Y/></a:X>"#,
        )
        .unwrap();
        let r = d.root();
        assert!(r.is("urn:a", "X"));
        let y = r.child("urn:b", "Y").unwrap();
        assert_eq!(y.text(), "hi & bye");
        assert_eq!(y.attr("k"), Some("v"));
        assert_eq!(r.find_all("urn:a", "Y").count(), 1);
    }

    #[test]
    fn qnames_in_text_resolve_in_scope() {
        let d =
            parse(r#"<T xmlns:dn="urn:dn" xmlns:tds="urn:tds">dn:NVT tds:Device x:Unknown</T>"#)
                .unwrap();
        assert_eq!(
            d.root().qnames(),
            &[
                ("urn:dn".to_owned(), "NVT".to_owned()),
                ("urn:tds".to_owned(), "Device".to_owned())
            ]
        );
    }

    #[test]
    fn doctype_and_entities_are_refused() {
        let lol = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        assert_eq!(parse(lol).unwrap_err(), XmlError::Doctype);
        assert!(matches!(
            parse("<a>&lol;</a>").unwrap_err(),
            XmlError::Malformed { .. }
        ));
    }

    #[test]
    fn caps_are_enforced() {
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(parse(&deep).unwrap_err(), XmlError::Limit { what: "depth" });
        let long = format!("<a>{}</a>", "x".repeat(9000));
        assert_eq!(
            parse(&long).unwrap_err(),
            XmlError::Limit {
                what: "text length"
            }
        );
        let big = vec![b' '; 70_000];
        assert!(matches!(
            Doc::parse(&big, Limits::DATAGRAM).unwrap_err(),
            XmlError::TooLarge { .. }
        ));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        for bad in [
            "",
            "<a>",
            "<a></b>",
            "<a/><b/>",
            "<p:a/>",
            "\u{0}<a/>",
            "<a x='1' x='2'/>",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            Doc::parse(&[0xff, 0xfe, b'<'], Limits::DATAGRAM).unwrap_err(),
            XmlError::NotUtf8
        );
    }

    #[test]
    fn descendants_stay_inside_the_subtree() {
        let d = parse("<r><a><b/><c><d/></c></a><e/></r>").unwrap();
        let a = d.root().child("", "a").unwrap();
        let names: Vec<_> = a.descendants().map(|e| e.local()).collect();
        assert_eq!(names, ["b", "c", "d"]);
    }
}
