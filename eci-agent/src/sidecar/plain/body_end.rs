//! Where a body ends in the bytes that carry it: a plain request's, from the client, and the
//! engine's answer's.
//!
//! A chunked body passes unchanged, chunk lines included, so the line the sidecar sees must be
//! the line the engine sees. Go's chunked reader (the engine's) reads a chunk-size line up to
//! its LF, cuts it at `;` and reads the hex digits before. This follower takes fewer lines than
//! that and reads each it takes to the same end: every line ends in CRLF, with no CR or LF
//! inside; the size is 1 to 15 hex digits, then optionally whitespace or an extension (skipped to
//! the CRLF, as Go skips it); trailers end at the first empty line. Where Go would refuse a line
//! this takes (`5 ;x`, an extension longer than 4 KiB), the engine ends the request with an
//! error; a body is never split in two places. (Hyper's path follows chunks too, in
//! `sidecar/framing.rs`, but as hyper reads them, bare LFs included, and only to find the next
//! head for hyper, which re-frames every body it reads.)

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// Until the engine closes the connection (an answer with no framing headers at all; a
    /// request never has it).
    UntilClose,
}

/// Follows a body through the bytes read, to find where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyEnd {
    state: State,
    /// A chunk-size or trailer line being read (only its length and emptiness matter once
    /// the size is parsed, so only the size's digits are kept).
    line: LineSoFar,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkDataEnd,
    Trailer,
    UntilClose,
    Done,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LineSoFar {
    size: u64,
    digits: u8,
    /// Past the digits (a `;` extension, or whitespace): the rest of the line is skipped.
    ext: bool,
    /// Any byte but CR in the line (for trailers: an empty line ends the body).
    any: bool,
    cr: bool,
}

/// Why a body cannot be followed: its sender broke its chunk framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct BadChunk;

impl BodyEnd {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Self {
            state,
            line: LineSoFar::default(),
        }
    }

    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// The bytes still to come of a body of known length (none for other framings).
    pub fn length_left(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Follows `bytes`; returns how many of them belong to the body (the rest, if any, came
    /// after its end).
    pub fn follow(&mut self, bytes: &[u8]) -> Result<usize, BadChunk> {
        let mut i = 0;
        while i < bytes.len() {
            let rest = (bytes.len() - i) as u64;
            match self.state {
                State::Done => break,
                State::UntilClose => return Ok(bytes.len()),
                State::Length(n) => {
                    let take = n.min(rest);
                    i += take as usize;
                    self.state = if take == n {
                        State::Done
                    } else {
                        State::Length(n - take)
                    };
                }
                State::ChunkData(n) => {
                    let take = n.min(rest);
                    i += take as usize;
                    self.state = if take == n {
                        State::ChunkDataEnd
                    } else {
                        State::ChunkData(n - take)
                    };
                }
                State::ChunkDataEnd => {
                    let b = bytes[i];
                    i += 1;
                    match (b, self.line.cr) {
                        (b'\r', false) => self.line.cr = true,
                        (b'\n', true) => {
                            self.line = LineSoFar::default();
                            self.state = State::ChunkSize;
                        }
                        _ => return Err(BadChunk),
                    }
                }
                State::ChunkSize | State::Trailer => {
                    let b = bytes[i];
                    i += 1;
                    self.line_byte(b)?;
                }
            }
        }
        Ok(i)
    }

    fn line_byte(&mut self, b: u8) -> Result<(), BadChunk> {
        let line = &mut self.line;
        if line.cr && b != b'\n' {
            return Err(BadChunk);
        }
        match b {
            b'\r' => line.cr = true,
            b'\n' if !line.cr => return Err(BadChunk),
            b'\n' => {
                let ended = std::mem::take(line);
                self.state = match self.state {
                    State::ChunkSize if ended.digits == 0 => return Err(BadChunk),
                    State::ChunkSize if ended.size == 0 => State::Trailer,
                    State::ChunkSize => State::ChunkData(ended.size),
                    _ if ended.any => State::Trailer,
                    _ => State::Done,
                };
            }
            _ => {
                line.any = true;
                if self.state == State::Trailer || line.ext {
                    return Ok(());
                }
                match (b as char).to_digit(16) {
                    Some(d) if line.digits < 15 => {
                        line.size = line.size << 4 | u64::from(d);
                        line.digits += 1;
                    }
                    Some(_) => return Err(BadChunk),
                    None if line.digits > 0 && matches!(b, b';' | b' ' | b'\t') => line.ext = true,
                    None => return Err(BadChunk),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Follows `body` in pieces of `step`; returns the bytes taken and whether it ended.
    fn follow(framing: Framing, body: &[u8], step: usize) -> Result<(usize, bool), BadChunk> {
        let mut end = BodyEnd::new(framing);
        let mut taken = 0;
        for piece in body.chunks(step) {
            let n = end.follow(piece)?;
            taken += n;
            if n < piece.len() {
                break;
            }
        }
        Ok((taken, end.done()))
    }

    #[test]
    fn chunked_bodies_end_where_their_last_chunk_and_trailers_end() {
        let body = b"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n";
        let mut stream = body.to_vec();
        stream.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        for step in [1, 2, 3, 7, stream.len()] {
            assert_eq!(
                follow(Framing::Chunked, &stream, step),
                Ok((body.len(), true)),
                "step {step}"
            );
        }
        assert_eq!(follow(Framing::Chunked, b"0\r\n\r\n", 1), Ok((5, true)));
        assert_eq!(follow(Framing::Chunked, b"5\r\nab", 1), Ok((5, false)));
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"3\r\nabcX\r\n",
            b"3\nabc",
            b"1000000000000000\r\n",
            b"3\rX",
            // Line ends Go would find where this follower finds none, or elsewhere: a bare LF
            // or a lone CR in an extension, a bare LF ending a trailer.
            b"5;\nabcde\r\n",
            b"5;a\rb\r\nabcde\r\n",
            b"0\r\nX-T: 1\n\r\n",
        ] {
            assert_eq!(follow(Framing::Chunked, bad, 1), Err(BadChunk), "{bad:?}");
        }
    }

    #[test]
    fn sized_bodies_end_at_their_length() {
        assert_eq!(follow(Framing::Length(3), b"abcdef", 2), Ok((3, true)));
        assert_eq!(follow(Framing::Length(9), b"abcdef", 4), Ok((6, false)));
        assert_eq!(follow(Framing::Length(0), b"abc", 1), Ok((0, true)));
        assert_eq!(follow(Framing::UntilClose, b"abc", 1), Ok((3, false)));
    }
}
