//! `sqs2pg healthcheck`: for Docker's HEALTHCHECK and other probes that can only run a
//! command. Exit 0 if the instance is ready, else 1 with the reason on one line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::config::HealthcheckArgs;
use crate::error_chain::ErrorChain;

/// How long `healthcheck` waits for an answer: a hung instance must fail the check well
/// within the prober's own timeout (Docker's default is 30 s), not hold it.
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Why `healthcheck` failed, on one line.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("SQS2PG_METRICS_ADDR {0} has port 0, which a client cannot reach")]
    NoPort(SocketAddr),
    #[error("GET {url} failed: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("GET {url} answered {status}: {body}")]
    NotReady {
        url: String,
        status: u16,
        body: String,
    },
}

/// Where a client reaches a server bound to `addr`: an unspecified address (0.0.0.0, [::])
/// listens on every interface, loopback included, but cannot be connected to.
pub fn probe_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// GET `/readyz` once, within [`HEALTHCHECK_TIMEOUT`].
pub async fn check_ready(addr: SocketAddr) -> Result<(), HealthcheckError> {
    if addr.port() == 0 {
        return Err(HealthcheckError::NoPort(addr));
    }
    let url = format!("http://{}/readyz", probe_addr(addr));
    // The causes too ("Connection refused"), on one line; the URL is said once, above.
    let unreachable = |error: reqwest::Error| HealthcheckError::Unreachable {
        url: url.clone(),
        reason: ErrorChain(&error.without_url()).to_string(),
    };
    let response = reqwest::Client::builder()
        .timeout(HEALTHCHECK_TIMEOUT)
        // Loopback, never through an HTTP_PROXY the container may set for other traffic.
        .no_proxy()
        .build()
        .map_err(unreachable)?
        .get(&url)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status().as_u16();
    if status == 200 {
        return Ok(());
    }
    // /readyz's body is a short reason ("database unreachable"), never a secret.
    let body = response.text().await.unwrap_or_default();
    Err(HealthcheckError::NotReady {
        url,
        status,
        body: body.split_whitespace().collect::<Vec<_>>().join(" "),
    })
}

/// `sqs2pg healthcheck`: exit 0 if ready, else 1 with the reason on one line of stderr.
pub async fn healthcheck(args: HealthcheckArgs) -> ExitCode {
    match check_ready(args.metrics_addr).await {
        Ok(()) => {
            println!("ready");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sqs2pg healthcheck: not ready: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_reach_an_unspecified_address_on_loopback() {
        let probe = |addr: &str| probe_addr(addr.parse().unwrap()).to_string();
        assert_eq!(probe("0.0.0.0:9898"), "127.0.0.1:9898");
        assert_eq!(probe("[::]:9898"), "[::1]:9898");
        assert_eq!(probe("10.1.2.3:9898"), "10.1.2.3:9898");
        assert_eq!(probe("127.0.0.1:1"), "127.0.0.1:1");
    }
}
