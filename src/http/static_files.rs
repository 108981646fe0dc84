//! Static files from `public/` and further mounts.
//!
//! actix-files' `NamedFile` answers each file (MIME type, ETag and Last-Modified with
//! 304, Range with 206 and 416, HEAD); this module decides *which* file: it decodes and
//! checks the path (no `..`, no hidden files, no symlinks leading out of the root),
//! picks a precompressed `.br`/`.gz` sibling the client accepts, resolves index files,
//! and falls back to `index.html` for single-page apps.
//!
//! Small files are also kept in memory ([`HotFiles`]): a hit skips path resolution,
//! `open` and `read`, and the answer is built from shared bytes. Like nginx's
//! `open_file_cache_valid`, a file's size and modification time are checked again at
//! most every [`HOT_FILE_RECHECK`], so a change shows within that; entries live a few
//! seconds, so that files or precompressed siblings added beside them are noticed.
//! Range requests always use the file.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_files::NamedFile;
use actix_web::http::header::{self, ContentEncoding, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use foldhash::fast::RandomState;
use moka::sync::Cache;
use moka::Equivalent;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::config::StaticSettings;

/// The folders served, longest URL prefix first.
pub struct StaticSite {
    mounts: Vec<Mount>,
    hot: Option<HotFiles>,
}

/// How long a file stays in memory before its path is resolved again.
const HOT_FILE_LIFETIME: Duration = Duration::from_secs(2);

/// How often a file in memory is compared with the disk (size and modification time):
/// a `stat` per hit would cost more than the rest of the hit.
const HOT_FILE_RECHECK: Duration = Duration::from_millis(250);

/// Small files in memory, by mount, path below it and the encodings the client takes.
pub struct HotFiles {
    /// Hashed with foldhash, as the response cache is: several times cheaper than SipHash.
    files: Cache<HotKey, Arc<HotFile>, RandomState>,
    max_file_bytes: u64,
}

/// Lookups use a `HotKey<&str>`, borrowing the request's path: a hit allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HotKey<P = Box<str>> {
    mount: usize,
    rest: P,
    /// Bit 0: accepts br; bit 1: accepts gzip.
    accepts: u8,
}

impl HotKey<&str> {
    fn stored(&self) -> HotKey {
        HotKey {
            mount: self.mount,
            rest: self.rest.into(),
            accepts: self.accepts,
        }
    }
}

/// Hashes as the owned key does: `&str` and `Box<str>` both hash as `str`.
impl Equivalent<HotKey> for HotKey<&str> {
    fn equivalent(&self, key: &HotKey) -> bool {
        self.mount == key.mount && self.rest == &*key.rest && self.accepts == key.accepts
    }
}

/// A file's bytes and the headers of its 200 answer.
struct HotFile {
    path: PathBuf,
    /// When the disk was last compared: milliseconds since `loaded`.
    checked_ms: AtomicU64,
    loaded: Instant,
    body: Bytes,
    modified: SystemTime,
    content_type: HeaderValue,
    encoding: Option<ContentEncoding>,
    has_variants: bool,
    etag: HeaderValue,
    last_modified: HeaderValue,
}

impl HotFiles {
    /// `None` when `max_bytes` is 0 (memory caching off).
    pub fn new(max_bytes: u64, max_file_bytes: u64) -> Option<Self> {
        (max_bytes > 0).then(|| Self {
            files: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_: &HotKey, file: &Arc<HotFile>| {
                    u32::try_from(file.body.len() + 256).unwrap_or(u32::MAX)
                })
                .time_to_live(HOT_FILE_LIFETIME)
                .build_with_hasher(RandomState::default()),
            max_file_bytes,
        })
    }
}

impl HotFile {
    /// Reads `chosen` when it is small enough; `None` otherwise.
    fn load(chosen: &Chosen, max_bytes: u64) -> Option<Self> {
        let meta = std::fs::metadata(&chosen.path).ok()?;
        if meta.len() > max_bytes {
            return None;
        }
        let modified = meta.modified().ok()?;
        let body = std::fs::read(&chosen.path).ok()?;
        if body.len() as u64 != meta.len() {
            return None;
        }
        Some(Self {
            path: chosen.path.clone(),
            checked_ms: AtomicU64::new(0),
            loaded: Instant::now(),
            etag: entity_tag(&meta, modified)?,
            last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(modified)).ok()?,
            body: Bytes::from(body),
            modified,
            content_type: HeaderValue::from_str(chosen.content_type.as_ref()).ok()?,
            encoding: chosen.encoding,
            has_variants: chosen.has_variants,
        })
    }

    /// Whether the file on disk is still the one in memory, as of at most
    /// [`HOT_FILE_RECHECK`] ago.
    fn is_current(&self) -> bool {
        let now = self.loaded.elapsed().as_millis() as u64;
        let checked = self.checked_ms.load(Ordering::Relaxed);
        if now.saturating_sub(checked) < HOT_FILE_RECHECK.as_millis() as u64 {
            return true;
        }
        self.checked_ms.store(now, Ordering::Relaxed);
        std::fs::metadata(&self.path).is_ok_and(|meta| {
            meta.len() == self.body.len() as u64 && meta.modified().ok() == Some(self.modified)
        })
    }

    fn respond(&self, req: &HttpRequest, mount: &Mount) -> HttpResponse {
        let mut response = if self.not_modified(req) {
            HttpResponse::NotModified().finish()
        } else {
            let mut response = HttpResponse::Ok().body(self.body.clone());
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, self.content_type.clone());
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            if let Some(encoding) = self.encoding {
                headers.insert(header::CONTENT_ENCODING, encoding.to_header_value());
            }
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(header::LAST_MODIFIED, self.last_modified.clone());
        if self.has_variants {
            headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        if let Some(cache_control) = &mount.cache_control {
            headers.insert(header::CACHE_CONTROL, cache_control.clone());
        }
        response
    }

    /// `If-None-Match` (weak comparison), or without it `If-Modified-Since`.
    fn not_modified(&self, req: &HttpRequest) -> bool {
        let headers = req.headers();
        if let Some(candidates) = headers.get(header::IF_NONE_MATCH) {
            let ours = opaque_tag(self.etag.as_bytes());
            return candidates
                .as_bytes()
                .split(|b| *b == b',')
                .any(|candidate| {
                    let candidate = candidate.trim_ascii();
                    candidate == b"*" || opaque_tag(candidate) == ours
                });
        }
        headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| httpdate::parse_http_date(value).ok())
            .is_some_and(|since| {
                let modified = self
                    .modified
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let since = since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                modified <= since
            })
    }
}

fn opaque_tag(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

/// The same strong ETag actix-files gives the file, so that answers from memory and
/// from disk validate each other.
fn entity_tag(meta: &std::fs::Metadata, modified: SystemTime) -> Option<HeaderValue> {
    use std::os::unix::fs::MetadataExt as _;
    let since_epoch = modified.duration_since(UNIX_EPOCH).ok()?;
    HeaderValue::from_str(&format!(
        "\"{:x}:{:x}:{:x}:{:x}\"",
        meta.ino(),
        meta.len(),
        since_epoch.as_secs(),
        since_epoch.subsec_nanos()
    ))
    .ok()
}

struct Mount {
    /// Position in the site's list, for memory-cache keys.
    position: usize,
    prefix: String,
    root: PathBuf,
    index: String,
    cache_control: Option<HeaderValue>,
    spa_fallback: bool,
    precompressed: bool,
}

/// A file chosen to answer a request.
struct Chosen {
    path: PathBuf,
    content_type: mime_guess::Mime,
    encoding: Option<ContentEncoding>,
    has_variants: bool,
}

enum Lookup {
    Found(Chosen),
    RedirectToDirectory(String),
    NotFound,
}

impl StaticSite {
    /// Checks every root exists and resolves it once, so that requests compare
    /// canonical paths.
    pub fn new(settings: &StaticSettings) -> Result<Self, String> {
        let root_mount = crate::config::StaticMount {
            prefix: "/".to_string(),
            root: settings.root.clone(),
            cache_control: settings.cache_control.clone(),
            spa_fallback: settings.spa_fallback,
        };
        let mut mounts = settings
            .mounts
            .iter()
            .chain(std::iter::once(&root_mount))
            .map(|mount| {
                let root = mount.root.canonicalize().map_err(|err| {
                    format!(
                        "static root {} cannot be served: {err}",
                        mount.root.display()
                    )
                })?;
                let cache_control = (!mount.cache_control.is_empty())
                    .then(|| HeaderValue::from_str(&mount.cache_control))
                    .transpose()
                    .map_err(|_| format!("invalid cache_control {:?}", mount.cache_control))?;
                Ok(Mount {
                    position: 0,
                    prefix: mount.prefix.trim_end_matches('/').to_string(),
                    root,
                    index: settings.index.clone(),
                    cache_control,
                    spa_fallback: mount.spa_fallback,
                    precompressed: settings.precompressed,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        mounts.sort_by_key(|mount| std::cmp::Reverse(mount.prefix.len()));
        for (position, mount) in mounts.iter_mut().enumerate() {
            mount.position = position;
        }
        Ok(Self { mounts, hot: None })
    }

    /// Keeps files of up to `max_file_bytes` in memory, `max_bytes` in all.
    pub fn with_memory(mut self, max_bytes: u64, max_file_bytes: u64) -> Self {
        self.hot = HotFiles::new(max_bytes, max_file_bytes);
        self
    }

    /// A site of one folder served under a route's path `prefix` (`""` for `/`).
    pub fn for_route(prefix: &str, root: &Path, settings: &StaticSettings) -> Result<Self, String> {
        let settings = StaticSettings {
            root: root.to_path_buf(),
            mounts: Vec::new(),
            ..settings.clone()
        };
        let mut site = Self::new(&settings)?;
        for mount in &mut site.mounts {
            mount.prefix = prefix.trim_end_matches('/').to_string();
        }
        Ok(site)
    }

    fn mount_for<'a>(&self, path: &'a str) -> Option<(&Mount, &'a str)> {
        self.mounts.iter().find_map(|mount| {
            let rest = path.strip_prefix(mount.prefix.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then_some((mount, rest))
        })
    }
}

/// Answers `req` from the files of `site`.
pub async fn serve_site(req: &HttpRequest, site: &StaticSite) -> HttpResponse {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, "GET, HEAD"))
            .body("405 Method Not Allowed\n");
    }
    let Some((mount, rest)) = site.mount_for(req.path()) else {
        return not_found(req, None).await;
    };
    let accept_encoding = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let hot = site
        .hot
        .as_ref()
        .filter(|_| !req.headers().contains_key(header::RANGE));
    let key = hot.map(|_| {
        let [br, gzip] = if mount.precompressed {
            accepted_encodings(accept_encoding, ["br", "gzip"])
        } else {
            [false; 2]
        };
        HotKey {
            mount: mount.position,
            rest,
            accepts: u8::from(br) | (u8::from(gzip) << 1),
        }
    });
    if let (Some(hot), Some(key)) = (hot, &key) {
        if let Some(file) = hot.files.get(key) {
            if file.is_current() {
                return file.respond(req, mount);
            }
            hot.files.invalidate(key);
        }
    }
    match lookup(mount, rest, accept_encoding) {
        Lookup::Found(chosen) => {
            if let (Some(hot), Some(key)) = (hot, key) {
                if let Some(file) = HotFile::load(&chosen, hot.max_file_bytes) {
                    let file = Arc::new(file);
                    hot.files.insert(key.stored(), file.clone());
                    return file.respond(req, mount);
                }
            }
            respond(req, mount, chosen).await
        }
        Lookup::RedirectToDirectory(location) => HttpResponse::MovedPermanently()
            .insert_header((header::LOCATION, location))
            .finish(),
        Lookup::NotFound => not_found(req, Some(mount)).await,
    }
}

async fn respond(req: &HttpRequest, mount: &Mount, chosen: Chosen) -> HttpResponse {
    let file = match NamedFile::open_async(&chosen.path).await {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return not_found(req, Some(mount)).await
        }
        Err(err) => {
            tracing::warn!(path = %chosen.path.display(), %err, "static file unreadable");
            return HttpResponse::Forbidden().body("403 Forbidden\n");
        }
    };
    let mut file = file
        .disable_content_disposition()
        .set_content_type(chosen.content_type);
    if let Some(encoding) = chosen.encoding {
        file = file.set_content_encoding(encoding);
    }
    let mut response = file.into_response(req);
    let headers = response.headers_mut();
    if chosen.has_variants {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if let Some(cache_control) = &mount.cache_control {
        headers.insert(header::CACHE_CONTROL, cache_control.clone());
    }
    response
}

/// A `404.html` in the root mount answers missing files when it exists.
async fn not_found(req: &HttpRequest, mount: Option<&Mount>) -> HttpResponse {
    if let Some(mount) = mount {
        let page = mount.root.join("404.html");
        if let Ok(file) = NamedFile::open_async(&page).await {
            let mut response = file
                .disable_content_disposition()
                .use_etag(false)
                .use_last_modified(false)
                .into_response(req);
            *response.status_mut() = StatusCode::NOT_FOUND;
            return response;
        }
    }
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("404 Not Found\n")
}

fn lookup(mount: &Mount, rest: &str, accept_encoding: &str) -> Lookup {
    let Some(segments) = sanitize(rest) else {
        return Lookup::NotFound;
    };
    let mut path = mount.root.clone();
    path.extend(&segments);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => {
            if !rest.ends_with('/') {
                return Lookup::RedirectToDirectory(directory_location(&mount.prefix, &segments));
            }
            path.push(&mount.index);
        }
        Ok(_) => {}
        Err(_) if mount.spa_fallback && looks_like_a_page(&segments) => {
            path = mount.root.join(&mount.index);
        }
        Err(_) => return Lookup::NotFound,
    }
    match choose(&mount.root, &path, mount.precompressed, accept_encoding) {
        Some(chosen) => Lookup::Found(chosen),
        None => Lookup::NotFound,
    }
}

/// Picks the file itself or an accepted precompressed sibling; `None` when the file is
/// missing, not a regular file, or resolves (through symlinks) outside `root`.
fn choose(root: &Path, path: &Path, precompressed: bool, accept_encoding: &str) -> Option<Chosen> {
    let original = inside_root(root, path)?;
    let content_type = content_type_for(&original);
    let mut chosen = Chosen {
        path: original.clone(),
        content_type,
        encoding: None,
        has_variants: false,
    };
    if !precompressed {
        return Some(chosen);
    }
    for (suffix, encoding, token) in [
        ("br", ContentEncoding::Brotli, "br"),
        ("gz", ContentEncoding::Gzip, "gzip"),
    ] {
        let mut sibling = original.clone().into_os_string();
        sibling.push(".");
        sibling.push(suffix);
        let Some(sibling) = inside_root(root, Path::new(&sibling)) else {
            continue;
        };
        chosen.has_variants = true;
        if chosen.encoding.is_none() && accepts_encoding(accept_encoding, token) {
            chosen.path = sibling;
            chosen.encoding = Some(encoding);
        }
    }
    Some(chosen)
}

/// The canonical path of a regular file under `root`, following symlinks only when
/// they stay inside it.
fn inside_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let canonical = path.canonicalize().ok()?;
    (canonical.starts_with(root) && canonical.is_file()).then_some(canonical)
}

/// Decodes the URL path below a mount into safe segments: `None` for `..`, hidden
/// files (but `.well-known`), NUL, backslashes or bytes that are not UTF-8.
fn sanitize(rest: &str) -> Option<Vec<String>> {
    let decoded = percent_decode_str(rest).decode_utf8().ok()?;
    if decoded.contains(['\0', '\\']) {
        return None;
    }
    decoded
        .split('/')
        .filter(|segment| !segment.is_empty() && *segment != ".")
        .map(|segment| {
            let hidden = segment.starts_with('.') && segment != ".well-known";
            (!hidden).then(|| segment.to_string())
        })
        .collect()
}

/// Paths without a file extension are pages of a single-page app; a missing `.js` or
/// `.png` stays a 404 rather than turning into HTML.
fn looks_like_a_page(segments: &[String]) -> bool {
    segments.last().is_none_or(|last| !last.contains('.'))
}

const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/');

/// The canonical URL of a directory, built from checked segments so that it can never
/// start with `//` and point at another host.
fn directory_location(prefix: &str, segments: &[String]) -> String {
    let mut location = prefix.to_string();
    for segment in segments {
        location.push('/');
        location.extend(utf8_percent_encode(segment, PATH_SEGMENT));
    }
    location.push('/');
    location
}

fn content_type_for(path: &Path) -> mime_guess::Mime {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let textual = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.essence_str(),
            "application/javascript"
                | "application/json"
                | "application/manifest+json"
                | "application/xml"
                | "image/svg+xml"
        );
    if textual && mime.get_param("charset").is_none() {
        format!("{mime}; charset=utf-8").parse().unwrap_or(mime)
    } else {
        mime
    }
}

/// Whether an `Accept-Encoding` header admits `token` (by name or `*`, with q > 0).
fn accepts_encoding(header: &str, token: &str) -> bool {
    let [accepted] = accepted_encodings(header, [token]);
    accepted
}

/// Which of `tokens` an `Accept-Encoding` header admits, in one pass over the header:
/// each token's first mention decides, else the last `*`.
fn accepted_encodings<const N: usize>(header: &str, tokens: [&str; N]) -> [bool; N] {
    let mut named = [None; N];
    let mut wildcard = false;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let quality = parts
            .find_map(|param| {
                let (key, value) = param.split_once('=')?;
                (key.trim() == "q").then(|| value.trim().parse::<f32>().unwrap_or(0.0))
            })
            .unwrap_or(1.0);
        if let Some(slot) = tokens
            .iter()
            .position(|token| name.eq_ignore_ascii_case(token))
        {
            named[slot].get_or_insert(quality > 0.0);
        }
        if name == "*" {
            wildcard = quality > 0.0;
        }
    }
    named.map(|accepted| accepted.unwrap_or(wildcard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_refuses_traversal_hidden_files_and_odd_bytes() {
        assert_eq!(sanitize("/a/b.txt"), Some(vec!["a".into(), "b.txt".into()]));
        assert_eq!(sanitize("//a/./b"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(sanitize("/a%20b"), Some(vec!["a b".into()]));
        assert_eq!(
            sanitize("/.well-known/x"),
            Some(vec![".well-known".into(), "x".into()])
        );
        for bad in [
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/x",
            "/%2E%2E%2Fx",
            "/.env",
            "/.git/config",
            "/a%00b",
            "/a%5c..%5cb",
            "/%ff",
        ] {
            assert_eq!(sanitize(bad), None, "{bad}");
        }
    }

    #[test]
    fn accept_encoding_honours_q_values_and_wildcards() {
        assert!(accepts_encoding("gzip, deflate, br", "br"));
        assert!(accepts_encoding("gzip;q=0.5, br;q=1.0", "gzip"));
        assert!(!accepts_encoding("gzip, br;q=0", "br"));
        assert!(accepts_encoding("*", "br"));
        assert!(!accepts_encoding("*;q=0", "gzip"));
        assert!(!accepts_encoding("identity", "gzip"));
        assert!(!accepts_encoding("", "gzip"));
        assert!(accepts_encoding("BR", "br"));
        assert_eq!(
            accepted_encodings("gzip;q=0, *, br;q=0", ["br", "gzip", "zstd"]),
            [false, false, true]
        );
    }

    #[test]
    fn directory_redirects_stay_on_this_host() {
        assert_eq!(directory_location("", &["evil.com".into()]), "/evil.com/");
        assert_eq!(
            directory_location("/assets", &["a b".into()]),
            "/assets/a%20b/"
        );
    }

    #[test]
    fn text_types_get_a_utf8_charset() {
        assert_eq!(
            content_type_for(Path::new("x.html")).to_string(),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type_for(Path::new("x.png")).to_string(),
            "image/png"
        );
        assert_eq!(
            content_type_for(Path::new("x.js")).essence_str(),
            "text/javascript"
        );
    }

    #[test]
    fn only_extensionless_paths_fall_back_to_the_app_page() {
        assert!(looks_like_a_page(&["app".into(), "settings".into()]));
        assert!(looks_like_a_page(&[]));
        assert!(!looks_like_a_page(&["main.js".into()]));
    }
}
