//! Hostile messages at the collector: bytes that are not protobuf, and a
//! message twice the size limit. Each is refused with a status, and the
//! collector keeps serving everyone else.
use std::time::Duration;

use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
    Status,
};
use vigil_proto::v1::{collector_client::CollectorClient, Alert, AlertBatch, AlertQuery, HostInfo};
use vigil_tests::*;

/// Sends and receives raw bytes: whatever the test wants on the wire.
#[derive(Default)]
struct Raw;

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use bytes_like::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use bytes_like::Buf;
        let mut v = vec![0u8; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// The `bytes` crate's traits, which tonic's buffers implement.
mod bytes_like {
    pub use bytes::{Buf, BufMut};
}

async fn raw_call(ch: Channel, path: &'static str, body: Vec<u8>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    let resp = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(vec![body])),
            path,
            Raw,
        )
        .await?;
    let mut s = resp.into_inner();
    while s.message().await?.is_some() {}
    Ok(())
}

#[test]
fn malformed_and_oversized_messages_are_refused_and_serving_goes_on() {
    let data = tempfile::tempdir().unwrap();
    let (mut collector, url) = start_collector(data.path(), "127.0.0.1:0");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        // Not protobuf: a field tag with wire type 7, which does not exist.
        let e = raw_call(
            ch.clone(),
            "/vigil.v1.Collector/StreamAlerts",
            vec![0x0f, 0xff, 0xff, 0x01],
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e.code(),
                tonic::Code::Internal | tonic::Code::InvalidArgument
            ),
            "{e:?}"
        );
        // A message of 8 MiB, twice the limit.
        let big = AlertBatch {
            activity: Vec::new(),
            host: Some(HostInfo {
                hostname: "h".into(),
                ..Default::default()
            }),
            seq: 1,
            alerts: vec![Alert {
                id: "big".into(),
                rule: "r".into(),
                output: "x".repeat(8 << 20),
                ..Default::default()
            }],
        };
        let mut c = CollectorClient::new(ch.clone()).max_encoding_message_size(64 << 20);
        let res = async {
            let mut s = c
                .stream_alerts(tokio_stream::iter(vec![big]))
                .await?
                .into_inner();
            while s.message().await?.is_some() {}
            Ok::<(), Status>(())
        }
        .await;
        let e = res.unwrap_err();
        assert!(
            matches!(
                e.code(),
                tonic::Code::ResourceExhausted | tonic::Code::OutOfRange | tonic::Code::Internal
            ),
            "{e:?}"
        );
        // Everyone else is still served, on a fresh connection too.
        let mut c = CollectorClient::connect(url.clone()).await.unwrap();
        let n = c.query_alerts(AlertQuery::default()).await.unwrap();
        let mut n = n.into_inner();
        let mut count = 0;
        while n.message().await.unwrap().is_some() {
            count += 1;
        }
        assert_eq!(count, 0, "nothing of either was stored");
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(collector.alive(), "{}", collector.stderr_lines().join("\n"));
    assert!(collector.stop().success());
}
