//! Rendering `Set-Cookie` values. The attributes are fixed by configuration, so they are
//! rendered once at configure time and each cookie costs one concatenation.

use crate::config::CookieConfig;

/// A prepared `Set-Cookie` template: `NAME=` + value + `; Path=/; ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookieTemplate {
    prefix: String,
    suffix: String,
    quote: bool,
}

impl SetCookieTemplate {
    /// `quote` wraps the value in double quotes (as Envoy's native cookie filter does).
    pub fn new(cfg: &CookieConfig, quote: bool) -> Self {
        let mut suffix = format!("; Path={}", cfg.path);
        if let Some(domain) = &cfg.domain {
            suffix.push_str("; Domain=");
            suffix.push_str(domain);
        }
        if let Some(max_age) = cfg.max_age {
            suffix.push_str(&format!("; Max-Age={}", max_age.as_secs()));
        }
        if cfg.secure {
            suffix.push_str("; Secure");
        }
        if cfg.http_only {
            suffix.push_str("; HttpOnly");
        }
        if let Some(same_site) = cfg.same_site {
            suffix.push_str("; SameSite=");
            suffix.push_str(same_site.as_str());
        }
        SetCookieTemplate {
            prefix: format!("{}=", cfg.name),
            suffix,
            quote,
        }
    }

    pub fn render(&self, value: &str) -> String {
        let mut out =
            String::with_capacity(self.prefix.len() + value.len() + self.suffix.len() + 2);
        out.push_str(&self.prefix);
        if self.quote {
            out.push('"');
        }
        out.push_str(value);
        if self.quote {
            out.push('"');
        }
        out.push_str(&self.suffix);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Kind};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn cookie_cfg(json: &str) -> CookieConfig {
        let Kind::HttpCookie(c) = Config::parse(json.as_bytes()).unwrap().kind else {
            panic!()
        };
        c
    }

    #[test]
    fn default_attributes() {
        let t = SetCookieTemplate::new(&cookie_cfg(r#"{"type":"http_cookie"}"#), false);
        assert_eq!(t.render("v"), "persist=v; Path=/; HttpOnly");
    }

    #[test]
    fn all_attributes_in_order() {
        let c = cookie_cfg(
            r#"{"type":"http_cookie","cookie":{"name":"S","path":"/app","domain":"example.com",
            "secure":true,"http_only":false,"same_site":"None","max_age":"1h"}}"#,
        );
        assert_eq!(
            SetCookieTemplate::new(&c, true).render("v"),
            "S=\"v\"; Path=/app; Domain=example.com; Max-Age=3600; Secure; SameSite=None"
        );
    }
}
