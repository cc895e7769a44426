//! Generated gRPC types and stubs for Vigil's `vigil.v1` API, plus small
//! conversions shared by the agent and the collector, and the certificates
//! of its mutual TLS.

pub mod json;
pub mod tls;

// A timeline entry holds an alert or an activity event, of like size; a
// box per entry would buy nothing.
#[allow(clippy::large_enum_variant)]
pub mod v1 {
    tonic::include_proto!("vigil.v1");

    impl Severity {
        /// Parses a Falco priority name (case-insensitive; `info` and
        /// `informational` both accepted).
        pub fn parse_name(s: &str) -> Option<Severity> {
            Some(match s.to_ascii_lowercase().as_str() {
                "debug" => Severity::Debug,
                "info" | "informational" => Severity::Informational,
                "notice" => Severity::Notice,
                "warning" | "warn" => Severity::Warning,
                "error" => Severity::Error,
                "critical" => Severity::Critical,
                "alert" => Severity::Alert,
                "emergency" => Severity::Emergency,
                _ => return None,
            })
        }

        /// The lower-case name used in rules, logs and JSON.
        pub fn name(self) -> &'static str {
            match self {
                Severity::Unspecified => "unspecified",
                Severity::Debug => "debug",
                Severity::Informational => "informational",
                Severity::Notice => "notice",
                Severity::Warning => "warning",
                Severity::Error => "error",
                Severity::Critical => "critical",
                Severity::Alert => "alert",
                Severity::Emergency => "emergency",
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1::Severity;

    #[test]
    fn severity_names_round_trip() {
        for v in 1..=8 {
            let s = Severity::try_from(v).unwrap();
            assert_eq!(Severity::parse_name(s.name()), Some(s));
        }
        assert_eq!(Severity::parse_name("WARNING"), Some(Severity::Warning));
        assert_eq!(Severity::parse_name("loud"), None);
    }
}
