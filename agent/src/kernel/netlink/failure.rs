//! How an exchange failed, in words: the one errno-to-text path of every
//! family (strerror, then the kernel's extended-ack reason).

use std::{fmt, io};

use super::{Failure, Refusal};

/// `File exists (os error 17)`, then the kernel's reason in parentheses.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        io::Error::from_raw_os_error(self.errno).fmt(f)?;
        match &self.extack {
            Some(why) => write!(f, " ({why})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Refusal {}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused(r) => r.fmt(f),
            Failure::Io(e) => e.fmt(f),
            Failure::Decode(e) => e.fmt(f),
        }
    }
}

impl Failure {
    /// The errno behind the failure, if the kernel or a syscall gave one.
    pub(crate) fn errno(&self) -> Option<i32> {
        match self {
            Failure::Refused(r) => Some(r.errno),
            Failure::Io(e) => e.raw_os_error(),
            Failure::Decode(_) => None,
        }
    }
}

/// For callers that only report the failure (nf_tables reads).
impl From<Failure> for io::Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Refused(r) => io::Error::from_raw_os_error(r.errno),
            Failure::Io(e) => e,
            Failure::Decode(e) => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reads_as_strerror_and_the_kernels_reason() {
        let r = Refusal {
            errno: libc::EINVAL,
            extack: Some("bad attr".into()),
        };
        assert_eq!(r.to_string(), "Invalid argument (os error 22) (bad attr)");
        let f = Failure::Refused(Refusal { extack: None, ..r });
        assert_eq!(f.to_string(), "Invalid argument (os error 22)");
        assert_eq!(f.errno(), Some(libc::EINVAL));
        assert_eq!(io::Error::from(f).raw_os_error(), Some(libc::EINVAL));
    }
}
