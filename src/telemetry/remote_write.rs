//! The Prometheus remote-write 1.0 wire format: a protobuf `WriteRequest`, snappy block
//! compressed (<https://prometheus.io/docs/specs/prw/remote_write_spec/>). The four messages are
//! declared with prost's derive, matching `prompb/types.proto` and `remote.proto` field for
//! field: no crates.io crate carries them as a maintained standard (the ones that exist pin old
//! prost releases or bring another metrics library), and a derive needs no protoc at build time.

use prost::Message;

pub const CONTENT_TYPE: &str = "application/x-protobuf";
pub const CONTENT_ENCODING: &str = "snappy";
pub const VERSION_HEADER: &str = "X-Prometheus-Remote-Write-Version";
pub const VERSION: &str = "0.1.0";

#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Sorted by name, `__name__` among them (the spec requires both).
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The request body: the protobuf, snappy-compressed in the block format (not framed).
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy compresses any buffer below 4 GiB")
}

/// The inverse of [`encode`] (tests, and anyone checking a captured body).
pub fn decode(body: &[u8]) -> Result<WriteRequest, DecodeError> {
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    Ok(WriteRequest::decode(raw.as_slice())?)
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not snappy block data: {0}")]
    Snappy(#[from] snap::Error),
    #[error("not a remote-write WriteRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(n: &str, v: &str) -> Label {
        Label {
            name: n.into(),
            value: v.into(),
        }
    }

    #[test]
    fn round_trips_through_protobuf_and_snappy() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    label("__name__", "pointsd_upstream_online"),
                    label("store_id", "store-1"),
                ],
                samples: vec![
                    Sample {
                        value: 1.0,
                        timestamp: 1_700_000_000_000,
                    },
                    Sample {
                        value: 0.0,
                        timestamp: 1_700_000_030_000,
                    },
                ],
            }],
        };
        let body = encode(&req);
        // A snappy block starts with the uncompressed length as a varint.
        let len = snap::raw::decompress_len(&body).unwrap();
        assert_eq!(len, req.encoded_len());
        assert_eq!(decode(&body).unwrap(), req);
    }

    #[test]
    fn field_numbers_match_prompb() {
        // Label{name:"a", value:"b"}: field 1 (0x0a) len 1 "a", field 2 (0x12) len 1 "b".
        assert_eq!(label("a", "b").encode_to_vec(), b"\x0a\x01a\x12\x01b");
        // Sample{value: 1.0, timestamp: 1}: field 1 fixed64 (0x09), field 2 varint (0x10).
        let s = Sample {
            value: 1.0,
            timestamp: 1,
        }
        .encode_to_vec();
        assert_eq!(s[0], 0x09);
        assert_eq!(&s[1..9], &1.0f64.to_le_bytes());
        assert_eq!(&s[9..], b"\x10\x01");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(decode(b"not snappy at all").is_err());
    }
}
