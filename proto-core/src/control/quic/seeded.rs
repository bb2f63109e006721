//! quinn-proto configuration with every random and wall-clock input taken
//! from the endpoint's seed: quinn's defaults would draw connection ids,
//! reset and token keys from its thread RNG and read `SystemTime::now`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ClientConfig, ConnectionId, ConnectionIdGenerator, EndpointConfig, IdleTimeout, NoneTokenStore,
    ServerConfig, Side, TimeSource, TransportConfig, VarInt,
};
use ring::{hkdf, hmac};

use super::{QuicError, QuicTiming};
use crate::control::tls_config::lent_unix_time;
use crate::csprng::Drbg;

/// Bytes in the connection ids this endpoint issues.
const CID_LEN: usize = 8;

/// Bytes in the initial destination connection id of a new connection
/// (RFC 9000 §7.2: at least 8, unpredictable).
const INITIAL_DCID_LEN: usize = 16;

/// Connection ids drawn from a seeded generator.
struct SeededCids {
    rng: Drbg,
}

impl ConnectionIdGenerator for SeededCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut cid = [0u8; CID_LEN];
        self.rng.fill(&mut cid);
        ConnectionId::new(&cid)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Wall-clock time for quinn's address-validation tokens: the time lent to
/// TLS for the current call. This endpoint issues no tokens (no retry, no
/// NEW_TOKEN), so quinn only asks when a peer presents one, which then fails
/// to decrypt under our key anyway; outside a lend it says the epoch.
struct LentSystemTime;

impl TimeSource for LentSystemTime {
    fn now(&self) -> SystemTime {
        lent_unix_time()
            .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs()))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// The endpoint-wide configuration: reset key, connection ids and quinn's
/// own generator all seeded from `rng`.
pub(super) fn endpoint_config(rng: &mut Drbg) -> EndpointConfig {
    let reset_key = hmac::Key::new(hmac::HMAC_SHA256, &rng.key());
    let mut config = EndpointConfig::new(Arc::new(reset_key));
    // quinn asks the factory once per endpoint.
    let cid_seed = rng.key();
    config.cid_generator(move || {
        Box::new(SeededCids {
            rng: Drbg::new(cid_seed),
        })
    });
    config.rng_seed(Some(rng.key()));
    config
}

/// The server side: TLS from `tls`, a seeded handshake-token key, no
/// address-validation tokens, time from the lend.
pub(super) fn server_config(
    tls: Arc<rustls::ServerConfig>,
    timing: &QuicTiming,
    rng: &mut Drbg,
) -> Result<ServerConfig, QuicError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Tls(e.to_string()))?;
    let token_key = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&rng.key());
    let mut config = ServerConfig::new(Arc::new(crypto), Arc::new(token_key));
    config.transport_config(Arc::new(transport(timing, Side::Server)?));
    config.validation_token.sent(0);
    config.time_source(Arc::new(LentSystemTime));
    Ok(config)
}

/// One outgoing connection's configuration, with its initial destination
/// connection id drawn from `rng` (quinn calls the provider once, in
/// `Endpoint::connect`).
pub(super) fn client_config(
    crypto: QuicClientConfig,
    transport: Arc<TransportConfig>,
    rng: &mut Drbg,
) -> ClientConfig {
    let mut dcid = [0u8; INITIAL_DCID_LEN];
    rng.fill(&mut dcid);
    let dcid = ConnectionId::new(&dcid);
    let mut config = ClientConfig::new(Arc::new(crypto));
    config
        .transport_config(transport)
        .token_store(Arc::new(NoneTokenStore))
        .initial_dst_cid_provider(Arc::new(move || dcid));
    config
}

/// Transport parameters of a control session: keepalive and idle timeout
/// from `timing`, exactly one bidirectional stream (opened by the client),
/// no unidirectional streams, no datagrams.
pub(super) fn transport(timing: &QuicTiming, side: Side) -> Result<TransportConfig, QuicError> {
    let idle = IdleTimeout::try_from(timing.idle_timeout).map_err(|_| {
        QuicError::Timing(format!("idle timeout {:?} too long", timing.idle_timeout))
    })?;
    let mut config = TransportConfig::default();
    config
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(timing.keepalive))
        .max_concurrent_bidi_streams(VarInt::from_u32(u32::from(side == Side::Server)))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .datagram_receive_buffer_size(None);
    Ok(config)
}
