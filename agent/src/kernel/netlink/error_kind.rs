//! Error kinds with their metric label and message beside each variant,
//! the shape of every family's error (`IpsetErrorKind`, `IpvsErrorKind`).

/// Defines a fieldless kind enum and its private `text(self) -> (label,
/// message)`, where `{}` in a message stands for the error's detail.
macro_rules! error_kinds {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident => ($label:literal, $text:literal),)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// The metric label and the message; `{}` stands for the detail.
            fn text(self) -> (&'static str, &'static str) {
                match self {
                    $($name::$variant => ($label, $text),)*
                }
            }
        }
    };
}

pub(crate) use error_kinds;
