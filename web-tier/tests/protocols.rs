//! HTTP/2 over TLS (ALPN, rustls, a self-signed certificate made here with rcgen),
//! HTTP/1.1 over TLS, and prior-knowledge h2c; with curl and with a hyper client.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};

use common::{Upstream, Web, curl};

const ALPHA: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

struct Tls {
    web: Web,
    cert_der: Vec<u8>,
    _up: Upstream,
}

fn start_tls() -> Tls {
    let up = Upstream::start("a");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let config = format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"
tls = {{ cert = "{{dir}}/cert.pem", key = "{{dir}}/key.pem" }}

[log]
access = "off"
error = "off"

[upstream.app]
server = [{{ addr = "{}" }}]

[[server]]
[[server.location]]
prefix = "/"
root = "{{dir}}/www"
[[server.location]]
prefix = "/api/"
proxy = "app"
"#,
        up.addr
    );
    let web = Web::start_tls(
        &config,
        &[
            ("cert.pem", ck.cert.pem().as_bytes()),
            ("key.pem", ck.key_pair.serialize_pem().as_bytes()),
            ("www/alpha.txt", ALPHA),
        ],
        true,
    );
    Tls {
        web,
        cert_der: ck.cert.der().to_vec(),
        _up: up,
    }
}

#[test]
fn curl_gets_http2_and_http11_over_tls() {
    let t = start_tls();
    let url = format!("https://localhost:{}/alpha.txt", t.web.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", t.web.addr.port());
    let cacert = t.web.path("cert.pem");
    let cacert = cacert.to_str().unwrap();

    let r = curl(&["--http2", "--cacert", cacert, "--resolve", &resolve, &url]);
    assert_eq!((r.version.as_str(), r.status), ("2", 200));
    assert_eq!(r.body, ALPHA);

    let r = curl(&[
        "--http2",
        "--cacert",
        cacert,
        "--resolve",
        &resolve,
        "-r",
        "0-2,4-5",
        &url,
    ]);
    assert_eq!((r.version.as_str(), r.status), ("2", 206));
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("multipart/byteranges")
    );

    let r = curl(&["--http1.1", "--cacert", cacert, "--resolve", &resolve, &url]);
    assert_eq!((r.version.as_str(), r.status), ("1.1", 200));
    assert_eq!(r.body, ALPHA);

    // Proxied over h2: the upstream sees HTTP/1.1 with Host from :authority and https.
    let api = format!("https://localhost:{}/api/echo", t.web.addr.port());
    let r = curl(&["--http2", "--cacert", cacert, "--resolve", &resolve, &api]);
    assert_eq!((r.version.as_str(), r.status), ("2", 200));
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("x-forwarded-proto: https\n"), "{text}");
    assert!(
        text.contains(&format!("host: localhost:{}\n", t.web.addr.port())),
        "{text}"
    );
}

#[test]
fn rust_client_speaks_h2_over_tls() {
    let t = start_tls();
    let addr = t.web.addr;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(t.cert_der.clone())).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        // Several streams on one connection.
        for (range, status, body) in [
            (None, 200, ALPHA),
            (Some("bytes=10-12"), 206, &b"abc"[..]),
            (Some("bytes=99-"), 416, &b"range not satisfiable\n"[..]),
        ] {
            let mut req = http::Request::builder()
                .uri(format!("https://localhost:{}/alpha.txt", addr.port()));
            if let Some(r) = range {
                req = req.header("range", r);
            }
            let resp = sender
                .send_request(req.body(Empty::<Bytes>::new()).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.version(), http::Version::HTTP_2);
            assert_eq!(resp.status(), status, "{range:?}");
            let got = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&got[..], body);
        }
    });
}

#[test]
fn h2c_prior_knowledge_with_curl_and_hyper() {
    let web = Web::start(
        "[log]\naccess = \"off\"\nerror = \"off\"\n[[server]]\n[[server.location]]\nprefix = \"/\"\nroot = \"{dir}\"\n",
        &[("alpha.txt", ALPHA)],
    );
    let r = curl(&["--http2-prior-knowledge", &web.url("/alpha.txt")]);
    assert_eq!((r.version.as_str(), r.status), ("2", 200));
    assert_eq!(r.body, ALPHA);

    let addr = web.addr;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let mut sender = h2c_sender(addr).await;
        let first = sender
            .send_request(
                http::Request::builder()
                    .uri(format!("http://{addr}/alpha.txt"))
                    .body(Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(first.status(), 200);
        let etag = first.headers()["etag"].clone();
        let again = sender
            .send_request(
                http::Request::builder()
                    .uri(format!("http://{addr}/alpha.txt"))
                    .header("if-none-match", etag)
                    .body(Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
    });
}

/// The limits HTTP/1.1 gets hold on h2 too: an oversized header list is a 431, an
/// oversized body a 413 (declared or streamed), and neither, nor a stream the client
/// resets, ends the connection for the streams after it.
#[test]
fn h2c_limits_match_http1_and_one_bad_stream_spares_the_connection() {
    let up = Upstream::start("a");
    let web = Web::start(
        &format!(
            "[log]\naccess = \"off\"\nerror = \"off\"\n[limits]\nmax_body_size = \"1k\"\nmax_header_size = \"8k\"\n[upstream.app]\nserver = [{{ addr = \"{}\" }}]\n[[server]]\n[[server.location]]\nprefix = \"/\"\nroot = \"{{dir}}\"\n[[server.location]]\nprefix = \"/api/\"\nproxy = \"app\"\n",
            up.addr
        ),
        &[("alpha.txt", ALPHA)],
    );
    let addr = web.addr;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let mut sender = h2c_sender(addr).await;
        let uri = |p: &str| format!("http://{addr}{p}");
        let status = |r: Result<http::Response<hyper::body::Incoming>, hyper::Error>| {
            r.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
        };

        let big = "x".repeat(20 * 1024);
        let r = sender
            .send_request(
                http::Request::builder()
                    .uri(uri("/alpha.txt"))
                    .header("x-big", big.as_str())
                    .body(http_body_util::Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        assert_eq!(status(r), Ok(431), "oversized header list");

        for (path, declared) in [
            ("/alpha.txt", true),
            ("/api/echo", true),
            ("/api/echo", false),
        ] {
            let mut req = http::Request::builder().method("POST").uri(uri(path));
            if declared {
                req = req.header("content-length", "4096");
            }
            let r = sender
                .send_request(
                    req.body(http_body_util::Full::new(Bytes::from(vec![b'x'; 4096])))
                        .unwrap(),
                )
                .await;
            assert_eq!(status(r), Ok(413), "{path} declared={declared}");
        }

        // A stream the client gives up on (reset) while its upstream holds it.
        let held = sender.send_request(
            http::Request::builder()
                .uri(uri("/api/gate"))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        );
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), held).await;

        let r = sender
            .send_request(
                http::Request::builder()
                    .uri(uri("/alpha.txt"))
                    .body(http_body_util::Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        assert_eq!(status(r), Ok(200), "the connection still serves");
    });
    up.release(1);
}

/// An h2c (prior knowledge) connection to `addr`, driven on the current runtime.
async fn h2c_sender<B>(addr: std::net::SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}
