//! `app_cookie`: the server's own session cookie (README "app_cookie"), looked up from the
//! request's cookie, a `;name=value` path parameter or a query parameter, and learned from
//! every `Set-Cookie` of that name a server sends.

use super::{cookie_value, path, response_cookie, url, ClientKey};
use crate::config::AppCookieConfig;
use crate::host::Host;

#[derive(Debug)]
pub struct AppCookieKey(AppCookieConfig);

pub fn key(cfg: &AppCookieConfig) -> Box<dyn ClientKey> {
    Box::new(AppCookieKey(cfg.clone()))
}

impl ClientKey for AppCookieKey {
    fn read(&self, host: &dyn Host) -> Option<Vec<u8>> {
        let c = &self.0;
        cookie_value(host, &c.name).or_else(|| {
            let p = path(host)?;
            url::path_parameter(&p, &c.name)
                .or_else(|| url::query_parameter(&p, c.query_parameter.as_deref()?))
                .map(<[u8]>::to_vec)
        })
    }

    fn taught_by_response(&self, host: &dyn Host) -> Vec<Vec<u8>> {
        // Only responses that set a cookie pay for reading the whole header map.
        if host.response_header("set-cookie").is_none() {
            return Vec::new();
        }
        host.response_header_values("set-cookie")
            .iter()
            .filter_map(|h| response_cookie::value(h, &self.0.name).map(<[u8]>::to_vec))
            .collect()
    }

    fn binds_unknown_keys(&self) -> bool {
        self.0.learn_from_request
    }
}
