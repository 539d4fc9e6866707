//! Content-addressed storage for uploaded files.
//!
//! An upload takes two steps. While the HTTP request is still open, [`FileStore::spool`]
//! copies its body to `root/incoming/<job id>`, so the request can be answered before
//! any real work starts. Later the `file-upload` job calls [`FileStore::ingest`], which
//! hashes the spooled file with SHA-256 and moves a copy to `root/sha256/ab/abcdef…`,
//! where `ab` is the first two hex characters of the hash. The same bytes therefore
//! land in the same place however often they are uploaded, and [`FileStore::inspect`]
//! says what they are: MIME type, extension and, for images, width and height.
//!
//! Every write goes to a temporary file first, is fsynced, then renamed into place, so a
//! reader never sees half a file under a final name. Temporary names start with `.tmp-`;
//! job ids cannot contain a dot, so the two never collide.
//!
//! This module does not delete anything it has finished: removing a spooled file once
//! its job is done, and expiring stored content, belong to the job and its store. It
//! also does not clean up after a cancelled call: if the future of `spool` or `ingest`
//! is dropped mid-copy, its `.tmp-` file stays behind until a sweep of those names at
//! start-up (not written yet) removes it. Errors, by contrast, do remove it.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The folder under the root that holds spooled uploads.
const INCOMING_DIR: &str = "incoming";

/// The folder under the root that holds stored content, named after the hash used.
const CONTENT_DIR: &str = "sha256";

/// Directory of marker files that say which app stored which file: bytes are
/// stored once, but each app sees only the files it stored itself.
const OWNERS_DIR: &str = "owners";

/// How every temporary file name starts.
const TEMP_PREFIX: &str = ".tmp-";

/// Bytes read, hashed and written per step of a copy.
const CHUNK_SIZE: usize = 64 * 1024;

/// Bytes read to guess a file's type: as many as `infer` itself looks at.
const SNIFF_LEN: usize = 8 * 1024;

/// The most bytes read to find an image's size. A JPEG keeps its size after any
/// metadata segments (EXIF, ICC profiles), which can fill many kilobytes; past this
/// the size is reported as unknown rather than reading on.
const IMAGE_HEADER_LIMIT: usize = 1024 * 1024;

/// The longest incoming name. Job ids are far shorter; the cap keeps a hostile name
/// from failing only at the rename, after the whole upload has been copied.
const MAX_NAME_LEN: usize = 128;

/// A failed file store operation.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The upload went past the byte limit given to [`FileStore::spool`].
    #[error("upload is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit that was passed, in bytes.
        limit: u64,
    },
    /// The name for an incoming file is empty, too long, or has a character other
    /// than `A-Z`, `a-z`, `0-9` and `-`.
    #[error("incoming file name {name:?} is invalid: use 1 to 128 of A-Z a-z 0-9 -")]
    InvalidName {
        /// The name that was refused.
        name: String,
    },
    /// The reader given to [`FileStore::spool`] failed: the client went away or sent
    /// a broken body. Kept apart from [`FileError::Io`] because it is the uploader's
    /// problem, not the disk's.
    #[error("the upload stream failed: {0}")]
    UploadInterrupted(#[source] io::Error),
    /// Reading, writing, syncing or renaming a file of the store failed.
    #[error("file store i/o failed: {0}")]
    Io(#[from] io::Error),
}

/// A file that is now in the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredFile {
    /// The SHA-256 of the content, as 64 lowercase hex characters.
    pub sha256: String,
    /// The content's length in bytes.
    pub size: u64,
}

/// What a stored file is, judged from its bytes rather than from any name or header
/// the uploader sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    /// The detected MIME type; `text/plain` or `application/octet-stream` when no
    /// signature matched.
    pub mime_type: String,
    /// The usual extension for that type, without the dot; `None` for unknown binary.
    pub extension: Option<String>,
    /// Width and height, for images whose header gives them.
    pub image: Option<ImageSize>,
}

/// The dimensions of an image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ImageSize {
    /// Width in pixels.
    pub width: u64,
    /// Height in pixels.
    pub height: u64,
}

/// Content-addressed storage under a root directory: a file's path is derived from
/// its SHA-256, `root/sha256/ab/abcdef…` (first two hex chars as a subdirectory).
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// Opens the store at `root`, creating `root`, `root/incoming` and `root/sha256`
    /// if they are missing.
    ///
    /// # Errors
    ///
    /// When a directory cannot be created.
    pub async fn open(root: impl Into<PathBuf>) -> io::Result<FileStore> {
        let root = root.into();
        fs::create_dir_all(root.join(INCOMING_DIR)).await?;
        fs::create_dir_all(root.join(CONTENT_DIR)).await?;
        Ok(FileStore { root })
    }

    /// Where an upload is spooled before its job runs: `root/incoming/<name>`.
    ///
    /// # Errors
    ///
    /// [`FileError::InvalidName`] unless `name` is 1 to 128 characters of `A-Z`,
    /// `a-z`, `0-9` and `-`. That set has no separator and no dot, so a name can
    /// neither leave the folder nor clash with a temporary file.
    pub fn incoming_path(&self, name: &str) -> Result<PathBuf, FileError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(FileError::InvalidName {
                name: name.to_owned(),
            });
        }
        Ok(self.root.join(INCOMING_DIR).join(name))
    }

    /// Copies `reader` to `root/incoming/<name>` and returns the number of bytes.
    ///
    /// The bytes go to a temporary file, which is fsynced and then renamed, so the
    /// final name only ever holds a whole upload. An existing file of that name is
    /// replaced.
    ///
    /// # Errors
    ///
    /// - [`FileError::InvalidName`] for a name [`incoming_path`](Self::incoming_path)
    ///   refuses, before anything is read.
    /// - [`FileError::TooLarge`] once the reader yields more than `limit` bytes.
    /// - [`FileError::UploadInterrupted`] when `reader` fails.
    /// - [`FileError::Io`] when writing, syncing or renaming fails.
    ///
    /// The temporary file is removed on every error.
    pub async fn spool<R: AsyncRead + Unpin>(
        &self,
        name: &str,
        reader: R,
        limit: u64,
    ) -> Result<u64, FileError> {
        let dest = self.incoming_path(name)?;
        let dir = self.root.join(INCOMING_DIR);
        let (temp, file) = create_temp(&dir).await?;

        let written = match copy_limited(reader, file, limit).await {
            Ok(written) => written,
            Err(error) => return Err(discard(&temp, error).await),
        };

        if let Err(error) = fs::rename(&temp, &dest).await {
            return Err(discard(&temp, error.into()).await);
        }
        sync_dir(&dir).await?;
        Ok(written)
    }

    /// Copies the file at `source` into the store, hashing it on the way, and returns
    /// its hash and size. `source` itself is left in place.
    ///
    /// `progress(bytes_done, total)` is called after each 64 KiB chunk, where `total`
    /// is the source's length when it was opened; the last call has
    /// `bytes_done == total` (for an empty file, one call with `(0, 0)`).
    ///
    /// The copy is written to a temporary file in `root/sha256`, fsynced, and renamed
    /// to its content path. When that path already exists the stored copy is kept and
    /// the new one dropped: same name, same bytes. Calling this again for the same
    /// source is therefore safe and stores nothing new.
    ///
    /// # Errors
    ///
    /// [`FileError::Io`] when `source` cannot be read or the copy cannot be written.
    /// The temporary file is removed.
    pub async fn ingest(
        &self,
        source: &Path,
        progress: impl FnMut(u64, u64),
    ) -> Result<StoredFile, FileError> {
        let dir = self.root.join(CONTENT_DIR);
        let (temp, file) = create_temp(&dir).await?;

        let stored = match copy_hashing(source, file, progress).await {
            Ok(stored) => stored,
            Err(error) => return Err(discard(&temp, error).await),
        };

        if let Err(error) = self.settle(&temp, &stored.sha256).await {
            return Err(discard(&temp, error).await);
        }
        Ok(stored)
    }

    /// Records that `app` stored the file with this hash.
    ///
    /// # Errors
    ///
    /// When the marker cannot be written.
    pub async fn record_owner(&self, app: &str, sha256: &str) -> Result<(), FileError> {
        if !is_sha256_hex(sha256) {
            return Err(FileError::InvalidName {
                name: sha256.to_owned(),
            });
        }
        let dir = self.owner_dir(app);
        fs::create_dir_all(&dir).await?;
        fs::write(dir.join(sha256), b"").await?;
        Ok(())
    }

    /// The stored file with this hash, if `app` stored it.
    pub async fn find_for(&self, app: &str, sha256: &str) -> Option<PathBuf> {
        let path = self.find(sha256).await?;
        let marker = self.owner_dir(app).join(sha256);
        fs::try_exists(marker).await.ok()?.then_some(path)
    }

    /// The app's marker directory; the id is hex-encoded, so no id can leave it.
    fn owner_dir(&self, app: &str) -> PathBuf {
        self.root.join(OWNERS_DIR).join(hex::encode(app))
    }

    /// The path of the stored file with this hash, or `None` when `sha256` is not
    /// 64 lowercase hex characters or no such file is stored.
    pub async fn find(&self, sha256: &str) -> Option<PathBuf> {
        // Checking the form first is what keeps "../x" and friends out of the path.
        if !is_sha256_hex(sha256) {
            return None;
        }
        let path = self.content_path(sha256);
        let metadata = fs::metadata(&path).await.ok()?;
        metadata.is_file().then_some(path)
    }

    /// Tells what the file at `path` is from its first bytes: MIME type and extension
    /// from the `infer` crate's signatures, and for images the width and height from
    /// the header.
    ///
    /// A file no signature matches is `text/plain` (extension `txt`) when its first
    /// 8 KiB are valid UTF-8 without a NUL byte, `application/octet-stream` otherwise;
    /// an empty file counts as text. An image whose size cannot be read within its
    /// first 1 MiB (unsupported format, corrupt header) has `image: None`.
    ///
    /// # Errors
    ///
    /// [`FileError::Io`] when the file cannot be opened or read.
    pub async fn inspect(&self, path: &Path) -> Result<FileInfo, FileError> {
        let mut file = File::open(path).await?;
        let mut head = Vec::with_capacity(SNIFF_LEN);
        read_more(&mut file, &mut head, SNIFF_LEN).await?;

        let Some(kind) = infer::get(&head) else {
            return Ok(FileInfo::unrecognised(&head));
        };

        let image = match kind.matcher_type() {
            infer::MatcherType::Image => image_size(&mut file, &mut head).await?,
            _ => None,
        };
        Ok(FileInfo {
            mime_type: kind.mime_type().to_owned(),
            extension: Some(kind.extension().to_owned()),
            image,
        })
    }

    /// Where content with this hash lives; `sha256` must already be checked.
    fn content_path(&self, sha256: &str) -> PathBuf {
        self.root.join(CONTENT_DIR).join(&sha256[..2]).join(sha256)
    }

    /// Moves a synced temporary file to the content path of `sha256`, or drops it
    /// when that content is already stored.
    async fn settle(&self, temp: &Path, sha256: &str) -> Result<(), FileError> {
        let dest = self.content_path(sha256);
        if fs::try_exists(&dest).await? {
            fs::remove_file(temp).await?;
            return Ok(());
        }

        // Two ingests of the same bytes may both get here. Both renames succeed and
        // the second replaces the first with identical content, atomically, so the
        // race is harmless.
        let shard = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(shard).await?;
        fs::rename(temp, &dest).await?;
        sync_dir(shard).await?;
        Ok(())
    }
}

impl FileInfo {
    /// The fallback for bytes no signature matched.
    fn unrecognised(head: &[u8]) -> FileInfo {
        let (mime_type, extension) = if looks_like_text(head) {
            ("text/plain", Some("txt".to_owned()))
        } else {
            ("application/octet-stream", None)
        };
        FileInfo {
            mime_type: mime_type.to_owned(),
            extension,
            image: None,
        }
    }
}

/// Creates a new, uniquely named temporary file in `dir`.
async fn create_temp(dir: &Path) -> io::Result<(PathBuf, File)> {
    // 64 random bits make a clash all but impossible; `create_new` turns the
    // remaining chance into an error instead of two writers sharing a file.
    let name = format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>());
    let path = dir.join(name);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .await?;
    Ok((path, file))
}

/// Removes a temporary file after `error`, and hands the error back.
async fn discard(temp: &Path, error: FileError) -> FileError {
    // The original error is the one worth reporting. If the removal fails too, the
    // file is only an orphan that a start-up sweep would clear.
    let _ = fs::remove_file(temp).await;
    error
}

/// Copies at most `limit` bytes from `reader` into `file` and fsyncs it.
async fn copy_limited<R: AsyncRead + Unpin>(
    mut reader: R,
    mut file: File,
    limit: u64,
) -> Result<u64, FileError> {
    let mut buf = vec![0; CHUNK_SIZE];
    let mut written = 0u64;

    // Ends at the end of the upload or at the first chunk that crosses the limit.
    // The loop is written out, not `tokio::io::copy`, to tell a failing reader
    // from a failing disk.
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(FileError::UploadInterrupted)?;
        if n == 0 {
            break;
        }
        written += n as u64;
        if written > limit {
            return Err(FileError::TooLarge { limit });
        }
        file.write_all(&buf[..n]).await?;
    }

    file.flush().await?;
    file.sync_all().await?;
    Ok(written)
}

/// Copies `source` into `file` chunk by chunk, hashing each chunk and reporting
/// progress, then fsyncs `file`.
async fn copy_hashing(
    source: &Path,
    mut file: File,
    mut progress: impl FnMut(u64, u64),
) -> Result<StoredFile, FileError> {
    let mut input = File::open(source).await?;
    let total = input.metadata().await?.len();
    let mut hasher = Sha256::new();
    let mut buf = vec![0; CHUNK_SIZE];
    let mut done = 0u64;

    // Ends at end of file: each pass consumes at least one byte or stops.
    loop {
        let n = input.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).await?;
        done += n as u64;
        progress(done, total);
    }

    // An empty file has no chunk, but the caller is still owed a final report.
    if done == 0 {
        progress(0, total);
    }

    file.flush().await?;
    file.sync_all().await?;
    Ok(StoredFile {
        sha256: hex::encode(hasher.finalize()),
        size: done,
    })
}

/// Reads from `file` until `head` has grown by `count` bytes or the file ends.
async fn read_more(file: &mut File, head: &mut Vec<u8>, count: usize) -> io::Result<()> {
    file.take(count as u64).read_to_end(head).await?;
    Ok(())
}

/// Finds an image's size from the header in `head`, reading more of `file` into it
/// while the header runs past what has been read, up to [`IMAGE_HEADER_LIMIT`].
async fn image_size(file: &mut File, head: &mut Vec<u8>) -> io::Result<Option<ImageSize>> {
    // Ends because `head` grows on every pass that does not return, and stops
    // growing at the limit or at end of file. From 8 KiB that is at most 5 passes.
    loop {
        match imagesize::blob_size(head) {
            Ok(size) => {
                return Ok(Some(ImageSize {
                    width: size.width as u64,
                    height: size.height as u64,
                }));
            }
            Err(imagesize::ImageError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {}
            Err(_) => return Ok(None),
        }

        let before = head.len();
        let target = (before * 4).clamp(SNIFF_LEN, IMAGE_HEADER_LIMIT);
        if target <= before {
            return Ok(None);
        }
        read_more(file, head, target - before).await?;
        if head.len() == before {
            return Ok(None);
        }
    }
}

/// Whether the start of a file reads as text: valid UTF-8 and no NUL byte.
fn looks_like_text(head: &[u8]) -> bool {
    if head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        // A full sniff buffer may cut a multi-byte character in two; only its last
        // few bytes are then missing, which `error_len() == None` reports.
        Err(e) => head.len() == SNIFF_LEN && e.error_len().is_none(),
    }
}

/// Whether `s` is a SHA-256 in the form the store uses: 64 lowercase hex characters.
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Fsyncs a directory, so that a rename into it survives a crash.
#[cfg(unix)]
async fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).await?.sync_all().await
}

/// Directories cannot be opened for syncing here; the rename is as durable as the
/// platform makes it.
#[cfg(not(unix))]
async fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    /// `printf 'hello herald\n' | sha256sum`
    const HELLO: &[u8] = b"hello herald\n";
    const HELLO_SHA256: &str = "9ba0ba3790d913e2f6a789cf924882e37381d14f7efe943769b02309f8baf766";

    /// A directory under the system temp dir, unique to one test, removed on drop
    /// even when the test fails.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("herald-files-{test}-{}-{n}", std::process::id());
            Scratch(std::env::temp_dir().join(name))
        }

        async fn store(&self) -> FileStore {
            FileStore::open(self.0.join("store"))
                .await
                .expect("open store")
        }

        /// Writes `bytes` to a file outside the store and returns its path.
        async fn source(&self, name: &str, bytes: &[u8]) -> PathBuf {
            fs::create_dir_all(&self.0)
                .await
                .expect("create scratch dir");
            let path = self.0.join(name);
            fs::write(&path, bytes).await.expect("write source");
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Every file under `dir`, at any depth.
    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("read dir") {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    pending.push(path)
                } else {
                    found.push(path)
                }
            }
        }
        found
    }

    /// A reader that fails at once, like a client that hung up mid-upload.
    struct HungUp;

    impl AsyncRead for HungUp {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
        }
    }

    /// A file in `tests/fixtures`. The two images there were made once with
    /// ImageMagick 6.9, `-strip` keeping dates out so the bytes are reproducible:
    /// `convert -size 7x5 gradient:'#1e90ff-#ff8c00' -depth 8 -strip gradient-7x5.png`
    /// `convert -size 9x4 gradient:'#228b22-#ffd700' -strip -quality 90 gradient-9x4.jpg`
    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    /// Bytes from a fixed xorshift sequence: as shapeless as random bytes, but the
    /// same on every run, so no run can happen to start with a known signature.
    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.extend_from_slice(&state.to_le_bytes());
        }
        bytes.truncate(len);
        bytes
    }

    #[tokio::test]
    async fn open_creates_its_directories() {
        let scratch = Scratch::new("open");
        let store = scratch.store().await;

        assert!(store.root.join("incoming").is_dir());
        assert!(store.root.join("sha256").is_dir());
        FileStore::open(&store.root)
            .await
            .expect("opening again is fine");
    }

    #[tokio::test]
    async fn ingest_hash_matches_sha256sum_and_path_is_sharded() {
        let scratch = Scratch::new("hash");
        let store = scratch.store().await;
        let source = scratch.source("hello.txt", HELLO).await;

        let stored = store.ingest(&source, |_, _| {}).await.expect("ingest");

        assert_eq!(
            stored,
            StoredFile {
                sha256: HELLO_SHA256.into(),
                size: 13
            }
        );
        let expected = store.root.join("sha256/9b").join(HELLO_SHA256);
        assert_eq!(store.find(HELLO_SHA256).await, Some(expected.clone()));
        assert_eq!(fs::read(&expected).await.expect("read stored"), HELLO);
        assert!(source.exists(), "ingest leaves its source in place");
    }

    #[tokio::test]
    async fn ingesting_twice_stores_one_file() {
        let scratch = Scratch::new("twice");
        let store = scratch.store().await;
        let first = scratch.source("a.bin", HELLO).await;
        let second = scratch.source("b.bin", HELLO).await;

        let a = store.ingest(&first, |_, _| {}).await.expect("first ingest");
        let b = store
            .ingest(&second, |_, _| {})
            .await
            .expect("second ingest");
        let c = store
            .ingest(&first, |_, _| {})
            .await
            .expect("repeat ingest");

        assert_eq!(a, b);
        assert_eq!(a, c);
        let stored = files_under(&store.root.join("sha256"));
        assert_eq!(
            stored,
            vec![store.root.join("sha256/9b").join(HELLO_SHA256)]
        );
    }

    #[tokio::test]
    async fn progress_rises_chunk_by_chunk_to_the_total() {
        let scratch = Scratch::new("progress");
        let store = scratch.store().await;
        let bytes = noise(3 * CHUNK_SIZE + 100);
        let source = scratch.source("big.bin", &bytes).await;

        let mut calls = Vec::new();
        let stored = store
            .ingest(&source, |done, total| calls.push((done, total)))
            .await;
        let stored = stored.expect("ingest");

        let total = bytes.len() as u64;
        assert_eq!(stored.size, total);
        assert!(
            calls.len() >= 4,
            "one call per chunk at most 64 KiB: {calls:?}"
        );
        assert!(
            calls.windows(2).all(|w| w[0].0 < w[1].0),
            "rising: {calls:?}"
        );
        assert!(calls.iter().all(|&(done, t)| t == total && done <= total));
        assert_eq!(calls.last(), Some(&(total, total)));
    }

    #[tokio::test]
    async fn progress_reports_once_for_an_empty_file() {
        let scratch = Scratch::new("empty");
        let store = scratch.store().await;
        let source = scratch.source("empty", b"").await;

        let mut calls = Vec::new();
        let stored = store
            .ingest(&source, |done, total| calls.push((done, total)))
            .await;

        assert_eq!(stored.expect("ingest").size, 0);
        assert_eq!(calls, vec![(0, 0)]);
    }

    #[tokio::test]
    async fn ingest_of_a_missing_source_fails_and_leaves_no_temp_file() {
        let scratch = Scratch::new("missing");
        let store = scratch.store().await;

        let result = store.ingest(&scratch.0.join("nope"), |_, _| {}).await;

        assert!(matches!(result, Err(FileError::Io(_))), "{result:?}");
        assert!(files_under(&store.root.join("sha256")).is_empty());
    }

    #[tokio::test]
    async fn spool_writes_up_to_the_limit_under_the_job_name() {
        let scratch = Scratch::new("spool");
        let store = scratch.store().await;

        let written = store.spool("job-1", HELLO, HELLO.len() as u64).await;

        assert_eq!(written.expect("spool"), 13);
        let path = store.incoming_path("job-1").expect("valid name");
        assert_eq!(fs::read(&path).await.expect("read spooled"), HELLO);
        assert_eq!(files_under(&store.root.join("incoming")), vec![path]);
    }

    #[tokio::test]
    async fn spool_refuses_past_the_limit_and_leaves_no_temp_file() {
        let scratch = Scratch::new("limit");
        let store = scratch.store().await;
        let bytes = noise(2 * CHUNK_SIZE);

        let limit = bytes.len() as u64 - 1;

        let result = store.spool("job-2", &bytes[..], limit).await;

        assert!(
            matches!(result, Err(FileError::TooLarge { limit: l }) if l == limit),
            "{result:?}"
        );
        assert!(files_under(&store.root.join("incoming")).is_empty());
    }

    #[tokio::test]
    async fn spool_tells_a_broken_upload_from_a_disk_error() {
        let scratch = Scratch::new("broken");
        let store = scratch.store().await;
        let reader = HELLO.chain(HungUp);

        let result = store.spool("job-3", reader, 100).await;

        assert!(
            matches!(result, Err(FileError::UploadInterrupted(_))),
            "{result:?}"
        );
        assert!(files_under(&store.root.join("incoming")).is_empty());
    }

    #[tokio::test]
    async fn spool_refuses_a_bad_name_before_reading() {
        let scratch = Scratch::new("badname");
        let store = scratch.store().await;

        let result = store.spool("../escape", HELLO, 100).await;

        assert!(
            matches!(result, Err(FileError::InvalidName { .. })),
            "{result:?}"
        );
        assert!(files_under(&store.root.join("incoming")).is_empty());
        assert!(!scratch.0.join("escape").exists());
    }

    #[tokio::test]
    async fn incoming_path_takes_only_letters_digits_and_dashes() {
        let scratch = Scratch::new("names");
        let store = scratch.store().await;

        let uuid = "0b7e6c1a-5f3d-4e2b-9a8c-1d2e3f4a5b6c";
        assert_eq!(
            store.incoming_path(uuid).ok(),
            Some(store.root.join("incoming").join(uuid))
        );
        let too_long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "", ".", "..", "../x", "a/b", "a\\b", "a.b", ".tmp-1", "é", "a b", &too_long,
        ] {
            assert!(
                store.incoming_path(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[tokio::test]
    async fn find_refuses_anything_but_a_lowercase_sha256() {
        let scratch = Scratch::new("find");
        let store = scratch.store().await;
        let source = scratch.source("hello.txt", HELLO).await;
        store.ingest(&source, |_, _| {}).await.expect("ingest");

        let upper = HELLO_SHA256.to_uppercase();
        let traversal = format!("../{}", &HELLO_SHA256[3..]);
        let short = &HELLO_SHA256[..63];
        for bad in [
            "",
            "../x",
            "..",
            short,
            &upper,
            &traversal,
            &format!("{HELLO_SHA256}0"),
        ] {
            assert_eq!(store.find(bad).await, None, "{bad:?} should be refused");
        }
        assert_eq!(
            store.find(&"0".repeat(64)).await,
            None,
            "well formed but absent"
        );
        assert!(store.find(HELLO_SHA256).await.is_some());
    }

    #[tokio::test]
    async fn inspect_reads_png_type_and_size() {
        let scratch = Scratch::new("png");
        let store = scratch.store().await;
        let stored = store
            .ingest(&fixture("gradient-7x5.png"), |_, _| {})
            .await
            .expect("ingest");
        let path = store.find(&stored.sha256).await.expect("stored");

        let info = store.inspect(&path).await.expect("inspect");

        assert_eq!(info.mime_type, "image/png");
        assert_eq!(info.extension.as_deref(), Some("png"));
        assert_eq!(
            info.image,
            Some(ImageSize {
                width: 7,
                height: 5
            })
        );
    }

    #[tokio::test]
    async fn inspect_reads_jpeg_type_and_size() {
        let scratch = Scratch::new("jpeg");
        let store = scratch.store().await;

        let info = store
            .inspect(&fixture("gradient-9x4.jpg"))
            .await
            .expect("inspect");

        assert_eq!(info.mime_type, "image/jpeg");
        assert_eq!(info.extension.as_deref(), Some("jpg"));
        assert_eq!(
            info.image,
            Some(ImageSize {
                width: 9,
                height: 4
            })
        );
    }

    #[tokio::test]
    async fn inspect_finds_a_jpeg_size_behind_a_large_segment() {
        let scratch = Scratch::new("jpegcomment");
        let store = scratch.store().await;

        // A 40 KB comment segment right after the start marker pushes the size
        // field well past the first 8 KiB, as EXIF data does in camera photos.
        let jpeg = fs::read(fixture("gradient-9x4.jpg"))
            .await
            .expect("read fixture");
        let comment_len: u16 = 40_000;
        let mut padded = jpeg[..2].to_vec();
        padded.extend_from_slice(&[0xFF, 0xFE]);
        padded.extend_from_slice(&comment_len.to_be_bytes());
        padded.resize(padded.len() + usize::from(comment_len) - 2, b'x');
        padded.extend_from_slice(&jpeg[2..]);
        let path = scratch.source("padded.jpg", &padded).await;

        let info = store.inspect(&path).await.expect("inspect");

        assert_eq!(info.mime_type, "image/jpeg");
        assert_eq!(
            info.image,
            Some(ImageSize {
                width: 9,
                height: 4
            })
        );
    }

    #[tokio::test]
    async fn inspect_calls_utf8_without_nul_plain_text() {
        let scratch = Scratch::new("text");
        let store = scratch.store().await;
        let path = scratch.source("note", "héllo, wörld\n".as_bytes()).await;

        let info = store.inspect(&path).await.expect("inspect");

        let text = FileInfo {
            mime_type: "text/plain".into(),
            extension: Some("txt".into()),
            image: None,
        };
        assert_eq!(info, text);
    }

    #[tokio::test]
    async fn inspect_keeps_text_whose_character_straddles_8_kib() {
        let scratch = Scratch::new("straddle");
        let store = scratch.store().await;
        let mut bytes = vec![b'a'; SNIFF_LEN - 1];
        bytes.extend_from_slice("é and more".as_bytes());
        let path = scratch.source("long-note", &bytes).await;

        let info = store.inspect(&path).await.expect("inspect");

        assert_eq!(info.mime_type, "text/plain");
    }

    #[tokio::test]
    async fn inspect_calls_random_bytes_octet_stream() {
        let scratch = Scratch::new("noise");
        let store = scratch.store().await;
        let path = scratch.source("noise", &noise(20_000)).await;

        let info = store.inspect(&path).await.expect("inspect");

        let binary = FileInfo {
            mime_type: "application/octet-stream".into(),
            extension: None,
            image: None,
        };
        assert_eq!(info, binary);
    }

    #[tokio::test]
    async fn inspect_calls_text_with_nul_octet_stream() {
        let scratch = Scratch::new("nul");
        let store = scratch.store().await;
        let path = scratch.source("nul", b"abc\0def").await;

        let info = store.inspect(&path).await.expect("inspect");

        assert_eq!(info.mime_type, "application/octet-stream");
    }

    #[test]
    fn file_info_serializes_in_camel_case() {
        let info = FileInfo {
            mime_type: "image/png".into(),
            extension: Some("png".into()),
            image: Some(ImageSize {
                width: 7,
                height: 5,
            }),
        };

        let json = serde_json::to_value(&info).expect("serialize");

        let expected = serde_json::json!({
            "mimeType": "image/png",
            "extension": "png",
            "image": {"width": 7, "height": 5},
        });
        assert_eq!(json, expected);
    }
}
