//! The file record: what a peer announces about one shared file (name, size, digest).
//!
//! On the wire a record is `{"name": "aula-01.mp4", "size": 3145728, "digest": "<64 hex>"}`,
//! an element of the `files` list of JOIN and UPDATE, of UPDATE's `add`, of LIST's reply, and
//! (with its holders) of SEARCH's `results`. `digest` is left out while the peer has not hashed
//! the file yet; `size` is left out when it is not known. A plain string (`"aula-01.mp4"`) is
//! the old form of a record, still accepted: a name whose size and digest are unknown.
//!
//! Both the tracker and the peer use these types; neither reads the other's disk.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A BLAKE3 digest of a whole file: 32 bytes, written as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

/// Why a text is not a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadDigest;

impl fmt::Display for BadDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a digest is 64 hexadecimal digits (BLAKE3 of the whole file)")
    }
}

impl std::error::Error for BadDigest {}

impl Digest {
    /// The digest as 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// Appends the 64 hex digits to `out` (what a SEARCH reply writes for each result).
    pub fn write_hex(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hex());
    }

    fn hex(&self) -> [u8; 64] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            text[2 * i] = HEX[(b >> 4) as usize];
            text[2 * i + 1] = HEX[(b & 15) as usize];
        }
        text
    }
}

impl FromStr for Digest {
    type Err = BadDigest;

    /// Reads 64 hex digits, in either case.
    fn from_str(text: &str) -> Result<Digest, BadDigest> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(BadDigest);
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (hex_value(pair[0]).ok_or(BadDigest)? << 4)
                | hex_value(pair[1]).ok_or(BadDigest)?;
        }
        Ok(Digest(out))
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.hex();
        // Only ASCII hex digits were written.
        f.write_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexVisitor;
        impl serde::de::Visitor<'_> for HexVisitor {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a digest of 64 hexadecimal digits")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Digest, E> {
                text.parse()
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(text), &self))
            }
        }
        deserializer.deserialize_str(HexVisitor)
    }
}

/// One shared file as announced: its name, and its size and digest when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRecord {
    /// The file's name: a plain name in the peer's shared folder.
    pub name: String,
    /// Its size in bytes; `None` when not known (the old plain-string form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// BLAKE3 of the whole file; `None` until the peer has hashed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

impl FileRecord {
    /// A record of which only the name is known (what a plain string means).
    pub fn named(name: impl Into<String>) -> FileRecord {
        FileRecord {
            name: name.into(),
            size: None,
            digest: None,
        }
    }

    /// A record with a known size and, if known, digest.
    pub fn sized(name: impl Into<String>, size: u64, digest: Option<Digest>) -> FileRecord {
        FileRecord {
            name: name.into(),
            size: Some(size),
            digest,
        }
    }
}

impl<'de> Deserialize<'de> for FileRecord {
    /// A record object, or the old form: a plain string (a name, size and digest unknown).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Object {
            name: String,
            #[serde(default)]
            size: Option<u64>,
            #[serde(default)]
            digest: Option<Digest>,
        }
        // Not `#[serde(untagged)]`: it would hide why an object was refused ("did not match
        // any variant"); the visitor keeps serde's own sentence.
        struct RecordVisitor;
        impl<'de> serde::de::Visitor<'de> for RecordVisitor {
            type Value = FileRecord;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a file name or a {\"name\", \"size\", \"digest\"} object")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<FileRecord, E> {
                Ok(FileRecord::named(name))
            }
            fn visit_string<E: serde::de::Error>(self, name: String) -> Result<FileRecord, E> {
                Ok(FileRecord::named(name))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<FileRecord, A::Error> {
                let object =
                    Object::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(FileRecord {
                    name: object.name,
                    size: object.size,
                    digest: object.digest,
                })
            }
        }
        deserializer.deserialize_any(RecordVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_as_lower_case_hex() {
        let hex = "00ff".repeat(16);
        let d: Digest = hex.to_uppercase().parse().unwrap();
        assert_eq!(d.to_string(), hex);
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{hex}\""));
        let back: Digest = serde_json::from_str(&format!("\"{hex}\"")).unwrap();
        assert_eq!(back, d);
        assert!("00ff".parse::<Digest>().is_err());
        assert!("zz".repeat(32).parse::<Digest>().is_err());
        assert!("é".repeat(32).parse::<Digest>().is_err());
    }

    #[test]
    fn records_accept_objects_and_plain_names() {
        let hex = "ab".repeat(32);
        let list: Vec<FileRecord> = serde_json::from_str(&format!(
            r#"["old.txt", {{"name":"a.mp4","size":3}}, {{"name":"b","size":1,"digest":"{hex}","x":1}}]"#
        ))
        .unwrap();
        assert_eq!(list[0], FileRecord::named("old.txt"));
        assert_eq!(list[1], FileRecord::sized("a.mp4", 3, None));
        assert_eq!(list[2].digest, Some(hex.parse().unwrap()));
        assert_eq!(
            serde_json::to_string(&list[1]).unwrap(),
            r#"{"name":"a.mp4","size":3}"#
        );
    }

    #[test]
    fn bad_records_say_what_is_wrong() {
        for (text, needle) in [
            (r#"[{"size":3}]"#, "missing field `name`"),
            (r#"[{"name":"a","size":-1}]"#, "invalid value"),
            (r#"[{"name":"a","digest":"abc"}]"#, "64 hexadecimal digits"),
            (r#"[3]"#, "a file name or"),
        ] {
            let e = serde_json::from_str::<Vec<FileRecord>>(text).unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }
}
