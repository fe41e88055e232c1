//! An error with every cause under it, on one line, as anyhow's `{:#}` prints a chain.
//!
//! The kernel layer's and the engine's errors put their cause in their own message and do not
//! also return it from `source()` (a chain would print it twice). Their causes are other crates'
//! errors, which keep the detail (aya's errno, hyper's I/O error) in *their* source: this keeps
//! it in the message.

use std::{error::Error, fmt};

/// `err`, then `: ` and each of its sources.
pub fn chain<E: Error + ?Sized>(err: &E) -> Chain<'_, E> {
    Chain(err)
}

pub struct Chain<'a, E: ?Sized>(&'a E);

impl<E: Error + ?Sized> fmt::Display for Chain<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("`bpf_map_delete_elem` failed")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_sources_follow_the_message() {
        let err = Outer(std::io::Error::from_raw_os_error(2));
        assert_eq!(
            chain(&err).to_string(),
            "`bpf_map_delete_elem` failed: No such file or directory (os error 2)"
        );
    }
}
