//! Container health probe of the FraudSense images (`HEALTHCHECK` in infra/docker/Dockerfile).
//!
//! `healthcheck ADDR_VARIABLE PATH` reads the listen address from the environment variable
//! ADDR_VARIABLE (`FRAUDSENSE_API_ADDR` or `FRAUDSENSE_WORKER_ADDR`, so the probe follows any
//! override of the port), connects to it (an unspecified address such as `0.0.0.0` becomes
//! loopback), sends `GET PATH` and exits 0 on a 2xx answer, 1 on anything else.
//!
//! Standard library only: the Dockerfile builds it with plain `rustc`, and the runtime image
//! needs no shell, curl or TLS library to probe. worker/tests/compose.rs builds and exercises it.

use std::{
    env,
    io::{Read, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    process::ExitCode,
    time::Duration,
};

/// Longest a connect, the request or the answer may take (below Docker's probe timeout).
const TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    match probe() {
        Ok(status) => {
            println!("healthcheck: {status}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("healthcheck: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Returns the status line of a 2xx answer, or why the service is not healthy.
fn probe() -> Result<String, String> {
    let mut args = env::args().skip(1);
    let (Some(var), Some(path), None) = (args.next(), args.next(), args.next()) else {
        return Err("usage: healthcheck ADDR_VARIABLE PATH".into());
    };
    let value = env::var(&var).map_err(|_| format!("{var} is not set"))?;
    let mut addr: SocketAddr = value.trim().parse().map_err(|e| format!("{var}={value:?}: {e}"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
    }
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("sending GET {path} to {addr}: {e}"))?;

    // Only the status line matters: read until its end (or 1 KiB, or the peer closes).
    let mut head = Vec::with_capacity(128);
    let mut buf = [0_u8; 128];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
        let n = stream.read(&mut buf).map_err(|e| format!("reading the answer from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let status_line = head.lines().next().unwrap_or_default().trim().to_owned();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status_line.starts_with("HTTP/") && code.len() == 3 && code.starts_with('2') {
        Ok(format!("GET {path} on {addr}: {status_line}"))
    } else {
        Err(format!("GET {path} on {addr}: unhealthy answer {status_line:?}"))
    }
}
