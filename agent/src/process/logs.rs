//! A task's output, read from its sandbox (`stdout`, `stderr`). The files
//! stay open between polls, so each poll reads only what was appended since
//! the previous one — following a long log costs what it grows by, not its
//! size per poll — and reads are at most [`CHUNK`] bytes, so a large log
//! streams instead of being loaded whole.

use crate::runtime::LogStream;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Largest piece read (and sent) at once.
pub const CHUNK: usize = 64 * 1024;
/// How often a followed log is checked for new output.
pub const POLL: Duration = Duration::from_millis(250);

/// An open log file and where the next read starts.
struct Cursor {
    path: PathBuf,
    file: Option<File>,
}

impl Cursor {
    fn new(path: PathBuf) -> Self {
        Cursor { path, file: None }
    }

    /// What was appended since the last read, at most `max` bytes.
    fn read(&mut self, max: usize) -> std::io::Result<Vec<u8>> {
        let f = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(File::open(&self.path)?),
        };
        let mut buf = Vec::new();
        f.by_ref().take(max as u64).read_to_end(&mut buf)?;
        if buf.is_empty() && f.metadata()?.len() < f.stream_position()? {
            // Truncated (the task id was launched again): start over.
            f.seek(SeekFrom::Start(0))?;
        }
        Ok(buf)
    }
}

struct State {
    out: Cursor,
    err: Cursor,
    follow: bool,
    live: Arc<dyn Fn() -> bool + Send + Sync>,
    done: bool,
}

/// Streams `sandbox/stdout` and `sandbox/stderr` (interleaved by poll);
/// with `follow`, keeps polling while `live()` says the task runs.
pub fn stream(
    sandbox: PathBuf,
    follow: bool,
    live: impl Fn() -> bool + Send + Sync + 'static,
) -> LogStream {
    let st = State {
        out: Cursor::new(sandbox.join("stdout")),
        err: Cursor::new(sandbox.join("stderr")),
        follow,
        live: Arc::new(live),
        done: false,
    };
    Box::pin(futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            // Asked before reading: what a task wrote just before it ended
            // is still read once more.
            let live = (st.live)();
            let mut chunk = match st.out.read(CHUNK) {
                Ok(b) => b,
                Err(e) => {
                    st.done = true;
                    return Some((Err(format!("no logs for this task here: {e}")), st));
                }
            };
            let room = CHUNK - chunk.len();
            if room > 0 {
                chunk.extend(st.err.read(room).unwrap_or_default());
            }
            if !chunk.is_empty() {
                return Some((Ok(chunk), st));
            }
            if !st.follow || !live {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }))
}
