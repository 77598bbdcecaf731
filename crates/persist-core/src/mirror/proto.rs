//! The few etcd v3 API messages the mirror uses (`etcdserverpb`, `mvccpb`), written by hand
//! with `prost` from the field numbers of etcd's `rpc.proto` and `kv.proto`. Fields the
//! mirror never reads or sets are left out: protobuf skips unknown fields.

use prost::Message;

/// gRPC services and methods (`/<service>/<method>`).
pub const KV: &str = "etcdserverpb.KV";
pub const LEASE: &str = "etcdserverpb.Lease";
pub const WATCH: &str = "etcdserverpb.Watch";

#[derive(Clone, PartialEq, Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub limit: i64,
    #[prost(int64, tag = "4")]
    pub revision: i64,
    #[prost(bool, tag = "7")]
    pub serializable: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    pub more: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub lease: i64,
}

/// `RequestOp`, only its `request_put` arm.
#[derive(Clone, PartialEq, Message)]
pub struct RequestOp {
    #[prost(message, optional, tag = "2")]
    pub request_put: Option<PutRequest>,
}

/// A transaction without compares: its `success` operations always run, atomically.
#[derive(Clone, PartialEq, Message)]
pub struct TxnRequest {
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TxnResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct LeaseGrantRequest {
    #[prost(int64, tag = "1")]
    pub ttl: i64,
    #[prost(int64, tag = "2")]
    pub id: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct LeaseGrantResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub id: i64,
    #[prost(int64, tag = "3")]
    pub ttl: i64,
    #[prost(string, tag = "4")]
    pub error: String,
}

/// `WatchCreateRequest.FilterType`: `NODELETE` drops delete events at the server.
pub const FILTER_NODELETE: i32 = 1;

#[derive(Clone, PartialEq, Message)]
pub struct WatchCreateRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub start_revision: i64,
    #[prost(int32, repeated, tag = "5")]
    pub filters: Vec<i32>,
}

/// `WatchRequest`, only its `create_request` arm.
#[derive(Clone, PartialEq, Message)]
pub struct WatchRequest {
    #[prost(message, optional, tag = "1")]
    pub create_request: Option<WatchCreateRequest>,
}

/// `mvccpb.Event.EventType`.
pub const EVENT_PUT: i32 = 0;

#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub kv: Option<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct WatchResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub watch_id: i64,
    #[prost(bool, tag = "3")]
    pub created: bool,
    #[prost(bool, tag = "4")]
    pub canceled: bool,
    #[prost(int64, tag = "5")]
    pub compact_revision: i64,
    #[prost(string, tag = "6")]
    pub cancel_reason: String,
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
}

/// Envoy's `envoy.config.core.v3.GrpcService` with only `envoy_grpc.cluster_name` set: the
/// proxy-wasm gRPC calls take it serialized, which names the cluster unambiguously (a bare
/// cluster name is first tried as a serialized proto by Envoy).
#[derive(Clone, PartialEq, Message)]
pub struct EnvoyGrpc {
    #[prost(string, tag = "1")]
    pub cluster_name: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct GrpcService {
    #[prost(message, optional, tag = "1")]
    pub envoy_grpc: Option<EnvoyGrpc>,
}

pub fn grpc_service(cluster: &str) -> Vec<u8> {
    GrpcService {
        envoy_grpc: Some(EnvoyGrpc {
            cluster_name: cluster.to_string(),
        }),
    }
    .encode_to_vec()
}

/// etcd's `range_end` for "every key starting with `prefix`": the prefix with its last
/// byte below 0xff incremented (and what follows dropped); `\0` (all keys) if none is.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Decodes a message, `None` on malformed input.
pub fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn wire_format_matches_etcd_field_numbers() {
        // PutRequest{key:"k", value:"v", lease:5} as protoc encodes it.
        let put = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 5,
        };
        assert_eq!(put.encode_to_vec(), b"\x0a\x01k\x12\x01v\x18\x05");
        // A Txn whose success list holds that put: field 2, RequestOp.request_put field 2.
        let txn = TxnRequest {
            success: vec![RequestOp {
                request_put: Some(put),
            }],
        };
        assert_eq!(
            txn.encode_to_vec(),
            b"\x12\x0a\x12\x08\x0a\x01k\x12\x01v\x18\x05"
        );
        let watch = WatchRequest {
            create_request: Some(WatchCreateRequest {
                key: b"/p/".to_vec(),
                range_end: b"/p0".to_vec(),
                start_revision: 7,
                filters: vec![FILTER_NODELETE],
            }),
        };
        assert_eq!(
            watch.encode_to_vec(),
            b"\x0a\x0f\x0a\x03/p/\x12\x03/p0\x18\x07\x2a\x01\x01"
        );
    }

    #[test]
    fn decodes_a_watch_response_and_skips_unknown_fields() {
        // header{revision:9}, created:true, events[{type PUT, kv{key,value,lease}}],
        // plus an unknown field 99.
        let kv = KeyValue {
            key: b"/p/a".to_vec(),
            mod_revision: 9,
            value: b"x".to_vec(),
            lease: 3,
        };
        let resp = WatchResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 9,
            }),
            created: true,
            events: vec![Event {
                r#type: EVENT_PUT,
                kv: Some(kv.clone()),
            }],
            ..WatchResponse::default()
        };
        let mut bytes = resp.encode_to_vec();
        bytes.extend_from_slice(b"\x98\x06\x01"); // field 99, varint 1
        let back: WatchResponse = decode(&bytes).unwrap();
        assert_eq!(back, resp);
        assert!(decode::<WatchResponse>(b"\x0a\xff").is_none());
    }

    #[test]
    fn envoy_grpc_service() {
        assert_eq!(grpc_service("etcd"), b"\x0a\x06\x0a\x04etcd");
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/persist/"), b"/persist0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
