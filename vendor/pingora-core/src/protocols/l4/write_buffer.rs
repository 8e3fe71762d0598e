// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! The L4 write buffer: small writes are collected and sent together, and a write that
//! does not fit is sent in the same system call as what is buffered.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Slices handed to one vectored write: the buffered bytes and the caller's first ones.
const MAX_SLICES: usize = 8;

/// A write buffer in front of a stream, like tokio's `BufWriter`: writes are collected up
/// to `capacity` bytes and sent on flush, and a write of `capacity` bytes or more
/// bypasses the buffer.
///
/// Unlike `BufWriter`, a write that does not fit next to what is buffered is sent
/// *together with* the buffered bytes, in one vectored write, instead of one write that
/// flushes the buffer and a second one for the data. An HTTP/1 response header (buffered)
/// followed by a body larger than what is left of the buffer leaves in one `writev`, not
/// two `sendto` calls, as Varnish and nginx do it.
///
/// The buffer is allocated on the first buffered write and kept for the connection's life.
#[derive(Debug)]
pub(crate) struct WriteBuffer<W> {
    inner: W,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written by a partial write.
    written: usize,
    capacity: usize,
}

impl<W: AsyncWrite + Unpin> WriteBuffer<W> {
    pub(crate) fn with_capacity(capacity: usize, inner: W) -> Self {
        WriteBuffer {
            inner,
            buf: Vec::new(),
            written: 0,
            capacity,
        }
    }

    pub(crate) fn get_ref(&self) -> &W {
        &self.inner
    }

    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The inner stream; anything still buffered is lost.
    pub(crate) fn into_inner(self) -> W {
        self.inner
    }

    /// What is buffered and not yet written.
    #[cfg(test)]
    fn buffer(&self) -> &[u8] {
        &self.buf[self.written..]
    }

    fn fits(&self, len: usize) -> bool {
        self.buf.len() + len <= self.capacity
    }

    fn append(&mut self, bufs: &[IoSlice<'_>]) {
        if self.buf.capacity() < self.capacity {
            self.buf.reserve_exact(self.capacity - self.buf.len());
        }
        for slice in bufs {
            self.buf.extend_from_slice(slice);
        }
    }

    /// Writes out everything buffered.
    fn poll_flush_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(write_zero()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_write_slices(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().map(|slice| slice.len()).sum::<usize>();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        loop {
            if self.fits(total) {
                self.append(bufs);
                return Poll::Ready(Ok(total));
            }
            let pending = self.buf.len() - self.written;
            if pending == 0 {
                self.buf.clear();
                self.written = 0;
                if self.fits(total) {
                    continue;
                }
                return match bufs {
                    [one] => Pin::new(&mut self.inner).poll_write(cx, one),
                    _ => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
                };
            }
            if !self.inner.is_write_vectored() {
                ready!(self.poll_flush_buf(cx))?;
                continue;
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            slices[0] = IoSlice::new(&self.buf[self.written..]);
            let taken = bufs.len().min(MAX_SLICES - 1);
            slices[1..=taken].copy_from_slice(&bufs[..taken]);
            let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &slices[..=taken]))?;
            if n == 0 {
                return Poll::Ready(Err(write_zero()));
            }
            if n < pending {
                self.written += n;
                continue;
            }
            self.buf.clear();
            self.written = 0;
            if n > pending {
                return Poll::Ready(Ok(n - pending));
            }
        }
    }
}

fn write_zero() -> io::Error {
    io::Error::new(io::ErrorKind::WriteZero, "failed to write buffered data")
}

impl<W: AsyncWrite + Unpin> AsyncWrite for WriteBuffer<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_buf(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_buf(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<W: AsyncRead + Unpin> AsyncRead for WriteBuffer<W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A stream that records each write call (one system call each), accepts at most
    /// `max_write` bytes per call, and answers every other call `Pending` when `stall`.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<Vec<u8>>,
        vectored: bool,
        max_write: Option<usize>,
        stall: bool,
        stalled: bool,
    }

    impl Recorder {
        fn vectored() -> Self {
            Recorder {
                vectored: true,
                ..Default::default()
            }
        }

        fn received(&self) -> Vec<u8> {
            self.calls.concat()
        }

        fn accept(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
            if self.stall {
                self.stalled = !self.stalled;
                if self.stalled {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            let mut data: Vec<u8> = bufs.iter().flat_map(|slice| slice.iter().copied()).collect();
            data.truncate(self.max_write.unwrap_or(usize::MAX));
            let n = data.len();
            self.calls.push(data);
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().accept(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().accept(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn small_writes_leave_in_one_call_on_flush() {
        let mut writer = WriteBuffer::with_capacity(1460, Recorder::vectored());
        writer.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        writer.write_all(b"Content-Length: 2\r\n\r\n").await.unwrap();
        writer.write_all(b"ok").await.unwrap();
        assert!(writer.get_ref().calls.is_empty());
        writer.flush().await.unwrap();
        assert_eq!(
            writer.get_ref().calls,
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()]
        );
    }

    #[tokio::test]
    async fn a_header_and_a_larger_body_leave_in_one_call() {
        let header = b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n";
        let body = body(4096);
        let mut writer = WriteBuffer::with_capacity(1460, Recorder::vectored());
        writer.write_all(header).await.unwrap();
        writer.write_all(&body).await.unwrap();
        writer.flush().await.unwrap();
        let recorder = writer.get_ref();
        assert_eq!(recorder.calls.len(), 1, "one writev for header and body");
        assert_eq!(recorder.received(), [&header[..], &body].concat());
    }

    #[tokio::test]
    async fn a_body_that_would_overflow_the_rest_of_the_buffer_goes_with_it() {
        // 1,000 + 600 bytes: each fits alone, not both; one call still carries both.
        let mut writer = WriteBuffer::with_capacity(1460, Recorder::vectored());
        writer.write_all(&body(1000)).await.unwrap();
        writer.write_all(&body(600)).await.unwrap();
        writer.flush().await.unwrap();
        assert_eq!(writer.get_ref().calls.len(), 1);
        assert_eq!(writer.get_ref().received(), [body(1000), body(600)].concat());
    }

    #[tokio::test]
    async fn partial_and_pending_writes_lose_and_repeat_nothing() {
        for max_write in [1, 7, 300, 1459, 1460, 1461, 5000] {
            let recorder = Recorder {
                vectored: true,
                max_write: Some(max_write),
                stall: true,
                ..Default::default()
            };
            let mut writer = WriteBuffer::with_capacity(1460, recorder);
            let mut expected = Vec::new();
            for len in [40, 3000, 10, 1455, 2, 1460, 0, 7000, 1] {
                let data = body(len);
                writer.write_all(&data).await.unwrap();
                expected.extend_from_slice(&data);
            }
            let chunk = [b"1000\r\n".to_vec(), vec![7; 4096], b"\r\n".to_vec()];
            let slices: Vec<IoSlice<'_>> = chunk.iter().map(|c| IoSlice::new(c)).collect();
            let n = writer.write_vectored(&slices).await.unwrap();
            let all = chunk.concat();
            writer.write_all(&all[n..]).await.unwrap();
            expected.extend_from_slice(&all);
            writer.shutdown().await.unwrap();
            assert!(writer.buffer().is_empty());
            assert_eq!(writer.get_ref().received(), expected, "max_write {max_write}");
        }
    }

    #[tokio::test]
    async fn vectored_writes_are_coalesced_with_the_buffer() {
        let mut writer = WriteBuffer::with_capacity(1460, Recorder::vectored());
        writer.write_all(b"header\r\n\r\n").await.unwrap();
        let body = body(2000);
        let slices = [IoSlice::new(b"7d0\r\n"), IoSlice::new(&body), IoSlice::new(b"\r\n")];
        let n = writer.write_vectored(&slices).await.unwrap();
        assert_eq!(n, 2007);
        writer.flush().await.unwrap();
        assert_eq!(writer.get_ref().calls.len(), 1);
        assert_eq!(
            writer.get_ref().received(),
            [&b"header\r\n\r\n7d0\r\n"[..], &body, b"\r\n"].concat()
        );
    }

    #[tokio::test]
    async fn without_vectored_writes_the_buffer_is_flushed_first() {
        let mut writer = WriteBuffer::with_capacity(1460, Recorder::default());
        writer.write_all(b"header").await.unwrap();
        writer.write_all(&body(3000)).await.unwrap();
        writer.flush().await.unwrap();
        let calls = &writer.get_ref().calls;
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0], b"header");
        assert_eq!(calls[1], body(3000));
    }

    #[tokio::test]
    async fn zero_capacity_writes_straight_through() {
        let mut writer = WriteBuffer::with_capacity(0, Recorder::vectored());
        writer.write_all(b"a").await.unwrap();
        writer.write_all(b"bc").await.unwrap();
        assert_eq!(writer.get_ref().calls, vec![b"a".to_vec(), b"bc".to_vec()]);
        assert_eq!(writer.buf.capacity(), 0, "no buffer is allocated");
    }
}
