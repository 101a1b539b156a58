//! Errno text for every family: the family's own numbers first (ipset's
//! start at 4097), then the C library's.

/// The text of a positive `errno`: `family`'s, else strerror's.
pub(crate) fn errno_text(errno: i32, family: &[(i32, &str)]) -> String {
    match family.iter().find(|(n, _)| *n == errno) {
        Some((_, text)) => (*text).to_owned(),
        None => std::io::Error::from_raw_os_error(errno).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_numbers_first_then_the_c_library() {
        let family = [(4097, "protocol error")];
        assert_eq!(errno_text(4097, &family), "protocol error");
        assert!(errno_text(libc::ENOENT, &family).starts_with("No such file"));
    }
}
