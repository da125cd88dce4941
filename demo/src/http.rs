//! A small blocking HTTP/1.1 client over `TcpStream`: enough for the demo's traffic
//! and the end-to-end tests (GET and POST, keep-alive, Content-Length and chunked
//! bodies), and explicit about *how* a request failed (connect, timeout, reset), which
//! a general-purpose client would hide behind retries.
//!
//! Sockets take the network namespace of the thread that opens them, so call
//! [`Conn::open`] on a thread inside the client namespace ([`crate::netns::enter`]).

use std::{
    fmt,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// Why a request got no HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// The connection was refused (RST to the SYN).
    Refused,
    /// Connect, write or read timed out.
    Timeout,
    /// The connection was reset or closed before a complete response.
    Reset,
    /// Bytes that are not an HTTP/1.1 response.
    Malformed,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::Refused => "refused",
            Failure::Timeout => "timeout",
            Failure::Reset => "reset",
            Failure::Malformed => "malformed",
        })
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => Failure::Refused,
            K::TimedOut | K::WouldBlock => Failure::Timeout,
            K::InvalidData => Failure::Malformed,
            _ => Failure::Reset,
        }
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive connection.
pub struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
    host: String,
    /// The server said `Connection: close` (or closed): open a new one.
    pub closed: bool,
    /// Responses read on this connection.
    pub served: u32,
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

impl Conn {
    /// Connects with `timeout` for the connect and for each read and write.
    pub fn open(addr: SocketAddr, timeout: Duration) -> Result<Conn, Failure> {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            r: BufReader::new(s.try_clone()?),
            w: s,
            host: addr.ip().to_string(),
            closed: false,
            served: 0,
        })
    }

    /// The local address (tells connections apart).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.w.local_addr().ok()
    }

    pub fn get(&mut self, path: &str) -> Result<Response, Failure> {
        self.request("GET", path, None)
    }

    pub fn post_json(&mut self, path: &str, body: &str) -> Result<Response, Failure> {
        self.request("POST", path, Some(body))
    }

    /// Sends one request and reads its response. On any failure the connection is
    /// marked closed.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, Failure> {
        let r = self.exchange(method, path, body);
        match &r {
            Ok(resp) => {
                self.served += 1;
                if resp
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    self.closed = true;
                }
            }
            Err(_) => self.closed = true,
        }
        r
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, Failure> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: lb-demo\r\nAccept: */*\r\n",
            self.host
        );
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        if let Some(b) = body {
            req.push_str(b);
        }
        self.w.write_all(req.as_bytes())?;
        self.read_response(method == "HEAD")
    }

    fn line(&mut self) -> Result<String, Failure> {
        let mut line = String::new();
        let n = self.r.read_line(&mut line)?;
        if n == 0 {
            return Err(Failure::Reset);
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn read_response(&mut self, head_only: bool) -> Result<Response, Failure> {
        let status_line = self.line()?;
        let mut parts = status_line.splitn(3, ' ');
        let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
            return Err(Failure::Malformed);
        };
        if !version.starts_with("HTTP/1.") {
            return Err(Failure::Malformed);
        }
        let status: u16 = code.parse().map_err(|_| Failure::Malformed)?;
        let mut headers = Vec::new();
        loop {
            let l = self.line()?;
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').ok_or(Failure::Malformed)?;
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(resp);
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            resp.body = self.read_chunked()?;
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().map_err(|_| Failure::Malformed)?;
            let mut body = vec![0; len];
            self.r.read_exact(&mut body).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    Failure::Reset
                } else {
                    e.into()
                }
            })?;
            resp.body = body;
        } else {
            // Delimited by close.
            self.r.read_to_end(&mut resp.body)?;
            self.closed = true;
        }
        Ok(resp)
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, Failure> {
        let mut body = Vec::new();
        loop {
            let size_line = self.line()?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| Failure::from(invalid("chunk size")))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.r.read_exact(&mut body[start..]).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    Failure::Reset
                } else {
                    e.into()
                }
            })?;
            if !self.line()?.is_empty() {
                return Err(Failure::Malformed);
            }
        }
    }
}

/// One request on a fresh connection.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response, Failure> {
    Conn::open(addr, timeout)?.get(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(reply: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            c.write_all(reply.as_bytes()).unwrap();
        });
        a
    }

    #[test]
    fn content_length_and_chunked_bodies() {
        let a = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let r = get(a, "/", Duration::from_secs(2)).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hello"));

        let a = serve_once(
            "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n",
        );
        let r = get(a, "/", Duration::from_secs(2)).unwrap();
        assert_eq!((r.status, r.text().as_str()), (503, "abcde"));
    }

    #[test]
    fn a_truncated_body_is_a_reset_and_garbage_is_malformed() {
        let a = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort");
        assert_eq!(
            get(a, "/", Duration::from_secs(2)).unwrap_err(),
            Failure::Reset
        );
        let a = serve_once("SSH-2.0-nope\r\n\r\n");
        assert_eq!(
            get(a, "/", Duration::from_secs(2)).unwrap_err(),
            Failure::Malformed
        );
    }
}
