//! A minimal gRPC-shaped upstream for the benchmark rows of `loadtest/compare.sh`: cleartext
//! HTTP/2 (prior knowledge) on `--listen`; every request is read to its end and answered as
//! a unary gRPC call would be: `200`, `content-type: application/grpc`, the request's
//! message echoed back, and the trailers `grpc-status: 0`. It does nothing else, so a
//! "through the gateway vs direct" comparison measures the gateway.
//!
//! ```text
//! cargo run --release --example grpc_upstream -- --listen 127.0.0.1:50051
//! ```

use bytes::{Bytes, BytesMut};
use clap::Parser;
use http::{HeaderMap, HeaderValue, Response};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: String,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen).await?;
        loop {
            let (socket, _) = listener.accept().await?;
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = connection.accept().await {
                    tokio::spawn(answer(request, respond));
                }
            });
        }
    })
}

async fn answer(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let mut body = request.into_body();
    let mut message = BytesMut::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
    }
    let response = Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .expect("a valid response");
    let Ok(mut stream) = respond.send_response(response, false) else {
        return;
    };
    let _ = stream.send_data(message.freeze(), false);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let _ = stream.send_trailers(trailers);
}
