//! Maps dotted key paths (`members[1].peer`) to lines of the source text and
//! byte offsets back to key paths, using toml's spanned document.

use toml::de::{DeTable, DeValue};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segments.push(Segment::Key(key.to_string()));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(index) = rest[1..end].parse() {
                segments.push(Segment::Index(index));
            }
            rest = &rest[end + 1..];
        }
    }
    segments
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where `path` is written, or the line of its closest existing
/// parent (a missing key is reported where its table starts). `None` when
/// the text does not parse or the path's first key is absent.
pub fn line_of_key(text: &str, path: &str) -> Option<usize> {
    let (root, _errors) = DeTable::parse_recoverable(text);
    let mut table: &DeTable<'_> = root.get_ref();
    let mut value: Option<&DeValue<'_>> = None;
    let mut best: Option<usize> = None;
    for segment in parse_path(path) {
        match (segment, value) {
            (Segment::Key(key), None) | (Segment::Key(key), Some(DeValue::Table(_))) => {
                if let Some(DeValue::Table(t)) = value {
                    table = t;
                }
                let Some((k, v)) = table
                    .iter()
                    .find(|(k, _)| k.get_ref().as_ref() == key.as_str())
                else {
                    break;
                };
                best = Some(k.span().start);
                value = Some(v.get_ref());
            }
            (Segment::Index(index), Some(DeValue::Array(array))) => {
                let Some(element) = array.get(index) else {
                    break;
                };
                best = Some(element.span().start);
                value = Some(element.get_ref());
            }
            _ => break,
        }
    }
    best.map(|offset| line_of(text, offset))
}

/// Every key of the document with its path, the start of the key and the
/// span of its value. Tables' own spans only cover their headers, so a
/// position inside a table's body is found through its keys.
fn flatten(text: &str) -> Vec<(String, usize, std::ops::Range<usize>)> {
    fn walk(
        prefix: &str,
        table: &DeTable<'_>,
        out: &mut Vec<(String, usize, std::ops::Range<usize>)>,
    ) {
        for (key, value) in table.iter() {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            out.push((path.clone(), key.span().start, value.span()));
            match value.get_ref() {
                DeValue::Table(inner) => walk(&path, inner, out),
                DeValue::Array(array) => {
                    for (index, element) in array.iter().enumerate() {
                        let element_path = format!("{path}[{index}]");
                        out.push((element_path.clone(), element.span().start, element.span()));
                        if let DeValue::Table(inner) = element.get_ref() {
                            walk(&element_path, inner, out);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let (root, _errors) = DeTable::parse_recoverable(text);
    let mut out = Vec::new();
    walk("", root.get_ref(), &mut out);
    out
}

/// The dotted key path at byte `offset`: the key whose value contains it,
/// else the last key written before it (used to name a parse error's key).
pub fn key_at(text: &str, offset: usize) -> String {
    let entries = flatten(text);
    let containing = entries
        .iter()
        .filter(|(_, key_start, value)| {
            (*key_start..value.end.max(*key_start + 1)).contains(&offset)
        })
        .max_by_key(|(_, key_start, _)| *key_start);
    if let Some((path, _, _)) = containing {
        return path.clone();
    }
    entries
        .iter()
        .filter(|(_, key_start, _)| *key_start <= offset)
        .max_by_key(|(_, key_start, _)| *key_start)
        .map(|(path, _, _)| path.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[node]\nname = \"n1\"\n\n[[members]]\nname = \"n1\"\nid = 1\n\n[[members]]\nname = \"n2\"\nid = 2\npeer = \"x\"\n";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(line_of_key(TEXT, "node.name"), Some(2));
        assert_eq!(line_of_key(TEXT, "members[0].id"), Some(6));
        assert_eq!(line_of_key(TEXT, "members[1].peer"), Some(11));
    }

    #[test]
    fn missing_key_falls_back_to_its_table() {
        assert_eq!(line_of_key(TEXT, "members[1].api"), Some(8));
        assert_eq!(line_of_key(TEXT, "absent.key"), None);
    }

    #[test]
    fn offsets_map_back_to_keys() {
        let offset = TEXT.find("\"x\"").unwrap();
        assert_eq!(key_at(TEXT, offset), "members[1].peer");
    }
}
