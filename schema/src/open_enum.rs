//! Enums that cross the wire must accept values that only a newer peer knows. [`open_enum!`]
//! declares a string-valued enum with an `Other(String)` variant that keeps the unknown value, so
//! an older agent or controller can still read, store and forward it.

/// Declares an open, string-valued enum: known variants map to fixed strings and any other
/// string becomes `Other(String)`, preserving it on re-encoding.
#[macro_export]
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this build does not know, kept verbatim (sent by a newer peer).
            Other(String),
        }

        impl $name {
            /// The wire spelling of this value.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $text, )+
                    Self::Other(s) => s.as_str(),
                }
            }

            /// Every value this build knows, for help texts and validation messages.
            pub const KNOWN: &'static [&'static str] = &[$($text),+];

            /// True when this build knows the value (it is not `Other`).
            pub fn is_known(&self) -> bool {
                !matches!(self, Self::Other(_))
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $text => Self::$variant, )+
                    other => Self::Other(other.to_string()),
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self::from(s.as_str())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.as_str().to_string()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                Ok(Self::from(s.as_ref()))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    open_enum! {
        /// Test enum.
        pub enum Color {
            /// Red.
            Red => "red",
            /// Blue.
            Blue => "blue",
        }
    }

    #[test]
    fn unknown_values_round_trip() {
        let c: Color = serde_json::from_str("\"ultraviolet\"").expect("parses");
        assert_eq!(c, Color::Other("ultraviolet".into()));
        assert_eq!(
            serde_json::to_string(&c).expect("encodes"),
            "\"ultraviolet\""
        );
        assert!(!c.is_known());
        let r: Color = serde_json::from_str("\"red\"").expect("parses");
        assert_eq!(r, Color::Red);
        assert!(r.is_known());
    }
}
