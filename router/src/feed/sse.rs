//! A server-sent events parser (the `text/event-stream` format): bytes in,
//! events out, as they arrive in arbitrary chunks.
//!
//! Lines end with `\n`, `\r\n` or `\r` (a `\r\n` split across two chunks is
//! one line end). `event:` names the event, `data:` lines are joined with
//! `\n`, a line starting with `:` is a comment (keep-alive pings), `id:` and
//! `retry:` are ignored (the feed resumes by version, not by event id). A
//! blank line dispatches the event when it has data. One event may hold at
//! most `max_event` bytes: a peer cannot make the parser grow without bound.

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field (`message` when absent).
    pub name: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Why the stream cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("event larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("event stream line is not UTF-8")]
    NotUtf8,
}

/// The parser's state between chunks.
#[derive(Debug)]
pub struct Parser {
    line: Vec<u8>,
    name: String,
    data: String,
    has_data: bool,
    /// The last chunk ended with `\r`: a `\n` starting the next one is part
    /// of the same line end.
    skip_lf: bool,
    max_event: usize,
}

impl Parser {
    pub fn new(max_event: usize) -> Parser {
        Parser {
            line: Vec::new(),
            name: String::new(),
            data: String::new(),
            has_data: false,
            skip_lf: false,
            max_event,
        }
    }

    /// Feeds a chunk; complete events are appended to `out` in order.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        let mut rest = chunk;
        if self.skip_lf {
            self.skip_lf = false;
            if let Some(b'\n') = rest.first() {
                rest = &rest[1..];
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.extend_line(&rest[..i])?;
            if rest[i] == b'\r' {
                match rest.get(i + 1) {
                    Some(b'\n') => rest = &rest[i + 2..],
                    Some(_) => rest = &rest[i + 1..],
                    None => {
                        self.skip_lf = true;
                        rest = &[];
                    }
                }
            } else {
                rest = &rest[i + 1..];
            }
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out)?;
            self.line = line;
            self.line.clear();
        }
        self.extend_line(rest)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + self.data.len() + bytes.len() > self.max_event {
            return Err(SseError::TooLarge {
                max: self.max_event,
            });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        if line.is_empty() {
            if self.has_data {
                out.push(Event {
                    name: if self.name.is_empty() {
                        "message".to_string()
                    } else {
                        std::mem::take(&mut self.name)
                    },
                    data: std::mem::take(&mut self.data),
                });
            }
            self.name.clear();
            self.data.clear();
            self.has_data = false;
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.name = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_chunks(input: &[u8], size: usize) -> Vec<Event> {
        let mut p = Parser::new(1 << 20);
        let mut out = Vec::new();
        for c in input.chunks(size) {
            p.push(c, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn events_are_the_same_whatever_the_chunking() {
        let input = b": ping\r\nevent: snapshot\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n\
event: update\ndata: x\n\n: ping\n\ndata:y\rdata\r\r";
        let want = vec![
            Event {
                name: "snapshot".into(),
                data: "{\"a\":\n1}".into(),
            },
            Event {
                name: "update".into(),
                data: "x".into(),
            },
            Event {
                name: "message".into(),
                data: "y\n".into(),
            },
        ];
        for size in 1..input.len() {
            assert_eq!(parse_in_chunks(input, size), want, "chunk size {size}");
        }
    }

    #[test]
    fn an_event_without_its_blank_line_is_not_dispatched() {
        assert_eq!(parse_in_chunks(b"event: update\ndata: 1\n", 4), vec![]);
    }

    #[test]
    fn an_endless_line_is_refused_at_the_bound() {
        let mut p = Parser::new(64);
        let mut out = Vec::new();
        p.push(&[b'a'; 60], &mut out).unwrap();
        assert_eq!(
            p.push(&[b'a'; 10], &mut out),
            Err(SseError::TooLarge { max: 64 })
        );
    }

    #[test]
    fn many_data_lines_are_bounded_too() {
        let mut p = Parser::new(64);
        let mut out = Vec::new();
        let r = (0..20).try_for_each(|_| p.push(b"data: 0123456789\n", &mut out));
        assert_eq!(r, Err(SseError::TooLarge { max: 64 }));
    }
}
