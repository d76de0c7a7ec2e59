//! The GGUF models already on the machine — Ollama's, LM Studio's and the Hugging
//! Face hub cache's — under the names `--model` takes, and what `inkling models`
//! says about each.
//!
//! Names: `ollama:NAME[:TAG]` (`NAMESPACE/NAME` and `HOST/NAMESPACE/NAME` too; the
//! tag defaults to `latest`), `lmstudio:PUBLISHER/REPO[/FILE]` and
//! `hf:ORG/REPO[/FILE]` (FILE may be left out when the repository has one GGUF).
//! Anything else is a path. A name is resolved by listing what is there and looking
//! it up, so an unknown name is answered with the names that exist. Listing reads
//! directories and Ollama's small manifests only; describing a model reads its
//! metadata with [`gguf`].

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::gguf::{Metadata, Value};
use crate::model_files::{self, DEFAULT_MODEL_FILE};
use inkling_core::template::{self, Family, Vocabulary};
use inkling_core::tokens::{Token, Tokenizer};

/// What the server and `inkling models` say about a chat/instruct model.
pub const CHAT_MODEL_WARNING: &str = "this looks like a chat/instruct model (it has a chat \
    template and no FIM tokens); inline completion needs a base or FIM (\"coder\") model, \
    so expect poor suggestions";

/// Whether a model looks like a chat/instruct model: it has a chat template, and
/// its vocabulary has no FIM layout, so inline completion gets the prefix alone.
pub fn is_chat_model(has_chat_template: bool, detected: Family) -> bool {
    has_chat_template && detected == Family::PrefixOnly
}

/// Where models are looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Places {
    /// Ollama model directories (`manifests/`, `blobs/`), first preferred.
    pub ollama: Vec<PathBuf>,
    /// LM Studio model directories (`PUBLISHER/REPO/*.gguf`), first preferred.
    pub lmstudio: Vec<PathBuf>,
    /// The Hugging Face hub cache (`models--ORG--REPO/`).
    pub hf_hub: Option<PathBuf>,
    /// Where inkling keeps its default model.
    pub inkling_cache: PathBuf,
}

impl Places {
    /// The places of this user: `$OLLAMA_MODELS`, else `~/.ollama/models` and the
    /// Linux service's `/usr/share/ollama/.ollama/models`; `~/.lmstudio/models` and
    /// the older `~/.cache/lm-studio/models`; `$HF_HUB_CACHE`, else `$HF_HOME/hub`,
    /// else `$XDG_CACHE_HOME/huggingface/hub` or `~/.cache/huggingface/hub`.
    pub fn from_env() -> Places {
        let env = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = env("HOME");
        let in_home = |relative: &str| home.as_ref().map(|home| home.join(relative));
        let ollama = match env("OLLAMA_MODELS") {
            Some(dir) => vec![dir],
            None => in_home(".ollama/models")
                .into_iter()
                .chain([PathBuf::from("/usr/share/ollama/.ollama/models")])
                .collect(),
        };
        let lmstudio = [".lmstudio/models", ".cache/lm-studio/models"]
            .into_iter()
            .filter_map(in_home)
            .collect();
        let hf_hub = env("HF_HUB_CACHE")
            .or_else(|| env("HF_HOME").map(|dir| dir.join("hub")))
            .or_else(|| {
                env("XDG_CACHE_HOME")
                    .or_else(|| in_home(".cache"))
                    .map(|dir| dir.join("huggingface").join("hub"))
            });
        Places {
            ollama,
            lmstudio,
            hf_hub,
            inkling_cache: model_files::cache_dir(),
        }
    }
}

/// A model file found under one of the [`Places`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The shortest name `--model` takes for it.
    pub name: String,
    /// The GGUF file (the first part of a split model).
    pub path: PathBuf,
    /// For LM Studio and Hugging Face: the repository's name (`hf:ORG/REPO`), which
    /// `--model` takes when the repository has this one GGUF.
    pub repository: Option<String>,
    /// The long name: the repository's name and the file's path in it.
    pub full_name: String,
}

/// Every model found, Ollama's first, then LM Studio's, then the hub cache's, each
/// sorted by name; a name found twice is kept where it was found first.
pub fn find(places: &Places) -> Vec<Found> {
    let mut found = Vec::new();
    for root in &places.ollama {
        found.extend(find_ollama(root));
    }
    let lmstudio = places.lmstudio.iter().flat_map(|root| find_lmstudio(root));
    found.extend(name_repository_files("lmstudio", lmstudio.collect()));
    if let Some(hub) = &places.hf_hub {
        found.extend(name_repository_files("hf", find_hf(hub)));
    }
    let mut seen = HashSet::new();
    found.retain(|model| seen.insert(model.full_name.clone()));
    found
}

/// The file `model` names: a name of the catalog resolved, or a path as it is.
pub fn resolve(model: &Path) -> Result<PathBuf, String> {
    resolve_in(&Places::from_env(), model)
}

/// [`resolve`] with these places.
pub fn resolve_in(places: &Places, model: &Path) -> Result<PathBuf, String> {
    let Some((scheme, rest)) = model.to_str().and_then(|m| m.split_once(':')) else {
        return resolve_path(places, model);
    };
    let (wanted, source) = match scheme {
        "ollama" => (format!("ollama:{}", ollama_canonical(rest)), "Ollama"),
        "lmstudio" => (model.display().to_string(), "LM Studio"),
        "hf" => (model.display().to_string(), "Hugging Face"),
        _ => return resolve_path(places, model),
    };
    let found = find(places);
    if let Some(model) = found
        .iter()
        .find(|f| f.name == wanted || f.full_name == wanted)
    {
        return Ok(model.path.clone());
    }
    let in_repository: Vec<&str> = found
        .iter()
        .filter(|f| f.repository.as_deref() == Some(wanted.as_str()))
        .map(|f| f.full_name.as_str())
        .collect();
    if !in_repository.is_empty() {
        return Err(format!(
            "{wanted} has several GGUF files; name one: {}",
            in_repository.join(", ")
        ));
    }
    let shown = wanted
        .split_once(':')
        .map_or(wanted.as_str(), |(_, name)| name);
    Err(format!(
        "no {source} model `{shown}`; found: {}",
        found_names(&found)
    ))
}

/// A path stays a path; a missing one is reported with the names that exist,
/// since it may be a name without its `ollama:`, `lmstudio:` or `hf:`.
fn resolve_path(places: &Places, path: &Path) -> Result<PathBuf, String> {
    match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "cannot open model {}: no such file; models found (names for --model): {}",
            path.display(),
            found_names(&find(places))
        )),
        _ => Ok(path.to_path_buf()),
    }
}

fn found_names(found: &[Found]) -> String {
    if found.is_empty() {
        return "none (see `inkling models`)".into();
    }
    found
        .iter()
        .map(|f| f.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `NAME[:TAG]`, `NAMESPACE/NAME[:TAG]` or `HOST/NAMESPACE/NAME[:TAG]` as Ollama
/// lists it: the default registry and the `library` namespace left out, the tag
/// `latest` put in.
fn ollama_canonical(name: &str) -> String {
    let (path, tag) = match name.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (path, tag),
        _ => (name, "latest"),
    };
    let path = path.strip_prefix("registry.ollama.ai/").unwrap_or(path);
    let path = path.strip_prefix("library/").unwrap_or(path);
    format!("{path}:{tag}")
}

/// Ollama's models: `manifests/HOST/NAMESPACE/NAME/TAG`, each naming its model
/// layer's blob.
fn find_ollama(root: &Path) -> Vec<Found> {
    let mut found = Vec::new();
    for host in subdirectories(&root.join("manifests")) {
        for namespace in subdirectories(&host) {
            for model in subdirectories(&namespace) {
                for manifest in files(&model) {
                    let Some(blob) = ollama_model_blob(root, &manifest) else {
                        continue;
                    };
                    fn segment(path: &Path) -> &str {
                        file_name(path).unwrap_or_default()
                    }
                    let path = match (segment(&host), segment(&namespace)) {
                        ("registry.ollama.ai", "library") => segment(&model).to_owned(),
                        ("registry.ollama.ai", namespace) => {
                            format!("{namespace}/{}", segment(&model))
                        }
                        (host, namespace) => format!("{host}/{namespace}/{}", segment(&model)),
                    };
                    let name = format!("ollama:{path}:{}", segment(&manifest));
                    found.push(Found {
                        full_name: name.clone(),
                        name,
                        path: blob,
                        repository: None,
                    });
                }
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The blob of the manifest's model layer, when it exists.
fn ollama_model_blob(root: &Path, manifest: &Path) -> Option<PathBuf> {
    // Manifests are a few hundred bytes; anything much larger is not one.
    let mut text = String::new();
    fs::File::open(manifest)
        .ok()?
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
    let digest = manifest["layers"]
        .as_array()?
        .iter()
        .find(|layer| layer["mediaType"] == "application/vnd.ollama.image.model")?["digest"]
        .as_str()?;
    // Only hex digits may reach the path.
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))?;
    let blob = root.join("blobs").join(format!("sha256-{hex}"));
    blob.is_file().then_some(blob)
}

/// A GGUF file in a repository: (repository, file's path in it, file).
type RepositoryFile = (String, String, PathBuf);

/// LM Studio's models: `PUBLISHER/REPO/*.gguf`.
fn find_lmstudio(root: &Path) -> Vec<RepositoryFile> {
    let mut found = Vec::new();
    for publisher in subdirectories(root) {
        for repository in subdirectories(&publisher) {
            let name = format!(
                "{}/{}",
                file_name(&publisher).unwrap_or_default(),
                file_name(&repository).unwrap_or_default()
            );
            for file in files(&repository).into_iter().filter(|f| is_model_gguf(f)) {
                let relative = file_name(&file).unwrap_or_default().to_owned();
                found.push((name.clone(), relative, file));
            }
        }
    }
    found
}

/// The commit a hub cache's `refs/*` file names: a regular file of at most a few
/// bytes holding 40 hex digits, so that neither a FIFO, a huge file nor a path
/// (`/`, `..`) can be taken for one.
fn read_revision(path: &Path) -> Option<String> {
    use std::io::Read;
    if !fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let mut text = String::new();
    fs::File::open(path)
        .ok()?
        .take(128)
        .read_to_string(&mut text)
        .ok()?;
    let revision = text.trim();
    (revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| revision.to_owned())
}

/// The hub cache's models: `models--ORG--REPO/snapshots/REV/…/*.gguf`, from the
/// revision `refs/main` names, else the newest snapshot.
fn find_hf(hub: &Path) -> Vec<RepositoryFile> {
    let mut found = Vec::new();
    for repository in subdirectories(hub) {
        let Some(name) = file_name(&repository)
            .and_then(|n| n.strip_prefix("models--"))
            .map(|n| n.replace("--", "/"))
        else {
            continue;
        };
        let snapshots = repository.join("snapshots");
        let main = read_revision(&repository.join("refs").join("main"))
            .map(|revision| snapshots.join(revision))
            .filter(|snapshot| snapshot.is_dir());
        let newest = || {
            subdirectories(&snapshots)
                .into_iter()
                .max_by_key(|dir| fs::metadata(dir).and_then(|m| m.modified()).ok())
        };
        let Some(snapshot) = main.or_else(newest) else {
            continue;
        };
        let mut files = Vec::new();
        gguf_files_under(&snapshot, 4, &mut files);
        for file in files {
            let relative = file.strip_prefix(&snapshot).unwrap_or(&file);
            let relative = relative.to_string_lossy().into_owned();
            found.push((name.clone(), relative, file));
        }
    }
    found
}

/// Names repository files `SCHEME:REPO` when the repository has one, else
/// `SCHEME:REPO/FILE`, keeping the first of files found twice; sorted by name.
fn name_repository_files(scheme: &str, mut files: Vec<RepositoryFile>) -> Vec<Found> {
    let mut seen = HashSet::new();
    files.retain(|(repository, relative, _)| seen.insert((repository.clone(), relative.clone())));
    let mut per_repository: HashMap<String, usize> = HashMap::new();
    for (repository, _, _) in &files {
        *per_repository.entry(repository.clone()).or_default() += 1;
    }
    let mut found: Vec<Found> = files
        .into_iter()
        .map(|(repository, relative, path)| {
            let repository_name = format!("{scheme}:{repository}");
            let full_name = format!("{repository_name}/{relative}");
            Found {
                name: if per_repository[&repository] == 1 {
                    repository_name.clone()
                } else {
                    full_name.clone()
                },
                full_name,
                path,
                repository: Some(repository_name),
            }
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// GGUF model files under `dir`, `depth` directories deep at most (symbolic links
/// to directories are not followed; links to files are, as the hub cache's are).
fn gguf_files_under(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if depth > 0 {
                gguf_files_under(&path, depth - 1, out);
            }
        } else if path.is_file() && is_model_gguf(&path) {
            out.push(path);
        }
    }
}

/// A `.gguf` file that is a model to load: not a vision projector (`mmproj`), not a
/// later part of a split model (llama.cpp loads the parts from the first).
fn is_model_gguf(path: &Path) -> bool {
    let Some(name) = file_name(path) else {
        return false;
    };
    name.to_ascii_lowercase().ends_with(".gguf")
        && !name.to_ascii_lowercase().contains("mmproj")
        && split_part(name).is_none_or(|(_, part, _)| part == 1)
}

/// `PREFIX-00002-of-00003.gguf` → (`PREFIX`, 2, 3).
fn split_part(name: &str) -> Option<(&str, u32, u32)> {
    let stem = name.get(..name.len().checked_sub(".gguf".len())?)?;
    let (rest, total) = stem.rsplit_once("-of-")?;
    let (prefix, part) = rest.rsplit_once('-')?;
    let number = |s: &str| {
        (s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    Some((prefix, number(part)?, number(total)?))
}

/// The bytes of the model: its file, or all parts of a split model.
fn model_size(path: &Path) -> u64 {
    let size = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
    match file_name(path).and_then(split_part) {
        Some((prefix, _, total)) => (1..=total)
            .map(|part| {
                size(&path.with_file_name(format!("{prefix}-{part:05}-of-{total:05}.gguf")))
            })
            .sum(),
        None => size(path),
    }
}

fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    entries(dir, |path| path.is_dir())
}

fn files(dir: &Path) -> Vec<PathBuf> {
    entries(dir, |path| path.is_file())
}

/// The entries of `dir` that `keep`, sorted; none when it cannot be read.
fn entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| keep(path))
        .collect();
    paths.sort();
    paths
}

/// What `inkling models` says about a model file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// Bytes on disk (all parts of a split model).
    pub size: u64,
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub model_name: Option<String>,
    /// The template family inkling would detect; `None` without a vocabulary.
    pub template: Option<Family>,
    /// See [`is_chat_model`].
    pub chat_model: bool,
}

/// Reads `path`'s metadata (through the same check as every model load) and
/// detects its template as the engine would.
pub fn describe(path: &Path) -> Result<Description, String> {
    let metadata = model_files::validate_gguf(path)?;
    let template = FileVocabulary::new(&metadata).map(|vocab| template::detect(&vocab).family);
    Ok(Description {
        size: model_size(path),
        architecture: metadata.architecture().map(str::to_owned),
        model_name: metadata.name().map(str::to_owned),
        template,
        chat_model: template.is_some_and(|t| is_chat_model(metadata.has_chat_template(), t)),
    })
}

/// The listing `inkling models` prints: the default model when the cache has it,
/// then every model found, each with the name for `--model`, and where it looked.
pub fn report(places: &Places) -> String {
    let mut out = String::new();
    let default = places.inkling_cache.join(DEFAULT_MODEL_FILE);
    let mut listed = 0;
    if default.is_file() {
        describe_into(&mut out, "(the default model: no --model needed)", &default);
        listed += 1;
    }
    for model in find(places) {
        describe_into(&mut out, &model.name, &model.path);
        listed += 1;
    }
    if listed == 0 {
        out.push_str("no GGUF models found\n");
    }
    let shown = |dirs: &[PathBuf]| {
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "searched: Ollama ({}), LM Studio ({}), Hugging Face ({}), inkling's cache ({})",
        shown(&places.ollama),
        shown(&places.lmstudio),
        places
            .hf_hub
            .as_ref()
            .map_or("no HOME".into(), |d| d.display().to_string()),
        places.inkling_cache.display()
    );
    out
}

fn describe_into(out: &mut String, name: &str, path: &Path) {
    let _ = writeln!(out, "{name}");
    match describe(path) {
        Ok(description) => {
            let mut facts = Vec::new();
            facts.extend(description.model_name.map(|n| format!("\"{n}\"")));
            facts.push(format_size(description.size));
            facts.push(format!(
                "architecture {}",
                description.architecture.as_deref().unwrap_or("unknown")
            ));
            facts.push(match description.template {
                Some(family) => format!("template {family}"),
                None => "no vocabulary".into(),
            });
            let _ = writeln!(out, "    {}", facts.join(", "));
            let _ = writeln!(out, "    {}", path.display());
            if description.chat_model {
                let _ = writeln!(out, "    warning: {CHAT_MODEL_WARNING}");
            }
        }
        Err(error) => {
            let _ = writeln!(out, "    {}", path.display());
            let _ = writeln!(out, "    unreadable: {error}");
        }
    }
}

fn format_size(bytes: u64) -> String {
    let bytes = bytes as f64;
    if bytes >= 1e9 {
        format!("{:.1} GB", bytes / 1e9)
    } else {
        format!("{:.0} MB", bytes / 1e6)
    }
}

/// A file's vocabulary as llama.cpp reads it, as far as template detection looks:
/// special tokens by spelling, the FIM tokens, BOS.
struct FileVocabulary<'m> {
    specials: HashMap<&'m str, Token>,
    fim: Option<[Token; 3]>,
    separator: Option<Token>,
    repo: Option<Token>,
    bos: Option<Token>,
}

/// The spellings by which llama.cpp finds the FIM tokens a file does not state
/// (`llama-vocab.cpp`).
const FIM_PREFIX_SPELLINGS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUFFIX_SPELLINGS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MIDDLE_SPELLINGS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_REPO_SPELLINGS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEPARATOR_SPELLINGS: &[&str] = &["<|file_sep|>"];

impl<'m> FileVocabulary<'m> {
    /// `None` when the file has no token list.
    fn new(metadata: &'m Metadata) -> Option<FileVocabulary<'m>> {
        let tokens = metadata.tokens()?;
        let in_vocabulary = |id: Option<u32>| {
            id.filter(|&id| (id as usize) < tokens.len())
                .and_then(|id| Token::try_from(id).ok())
        };
        let stated_or_spelled = |stated: Option<u32>, spellings: &[&str]| {
            in_vocabulary(stated).or_else(|| {
                let spelled = tokens.iter().position(|t| spellings.contains(&t.as_str()));
                spelled.and_then(|id| Token::try_from(id).ok())
            })
        };
        let stated = metadata.fim_tokens();
        let prefix = stated_or_spelled(stated.prefix, FIM_PREFIX_SPELLINGS);
        let suffix = stated_or_spelled(stated.suffix, FIM_SUFFIX_SPELLINGS);
        let middle = stated_or_spelled(stated.middle, FIM_MIDDLE_SPELLINGS);
        let repo = stated_or_spelled(stated.repo, FIM_REPO_SPELLINGS);
        let separator = stated_or_spelled(stated.separator, FIM_SEPARATOR_SPELLINGS);
        // llama.cpp parses control, user-defined and unknown tokens as specials (all
        // of them when the file gives no types), and the FIM tokens, which it
        // makes control tokens when it finds them by spelling.
        let types = metadata.token_types();
        let mut specials = HashMap::new();
        for (id, token) in tokens.iter().enumerate() {
            let special = types.is_none_or(|types| matches!(types.get(id), Some(2..=4)));
            if let (true, Ok(id)) = (special, Token::try_from(id)) {
                specials.entry(token.as_str()).or_insert(id);
            }
        }
        for id in [prefix, suffix, middle, repo, separator]
            .into_iter()
            .flatten()
        {
            specials.entry(tokens[id as usize].as_str()).or_insert(id);
        }
        let add_bos = metadata.get("tokenizer.ggml.add_bos_token") == Some(&Value::Bool(true));
        Some(FileVocabulary {
            specials,
            fim: prefix.zip(suffix).zip(middle).map(|((p, s), m)| [p, s, m]),
            separator,
            repo,
            bos: in_vocabulary(metadata.token_id("tokenizer.ggml.bos_token_id"))
                .filter(|_| add_bos),
        })
    }
}

/// Text is never tokenized here: that needs llama.cpp's merges and normalisation,
/// and template detection reads special tokens only.
impl Tokenizer for FileVocabulary<'_> {
    fn tokenize(&self, _text: &str) -> Vec<Token> {
        Vec::new()
    }
}

impl Vocabulary for FileVocabulary<'_> {
    fn token_for(&self, text: &str) -> Option<Token> {
        self.specials.get(text).copied()
    }

    fn tokenize_special(&self, text: &str) -> Vec<Token> {
        self.token_for(text).into_iter().collect()
    }

    fn bos(&self) -> Option<Token> {
        self.bos
    }

    fn fim(&self) -> Option<[Token; 3]> {
        self.fim
    }

    fn fim_files(&self) -> (Option<Token>, Option<Token>) {
        (self.separator, self.repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_gguf::{GgufValue, gguf_bytes};

    /// A vocabulary-only GGUF's bytes: `tokens` typed `types`, `extra` metadata.
    fn vocabulary(tokens: &[&str], types: &[i32], extra: Vec<(&str, GgufValue)>) -> Vec<u8> {
        let mut kvs = vec![
            ("general.architecture", GgufValue::Str("llama".into())),
            ("general.name", GgufValue::Str("Test Model".into())),
            (
                "tokenizer.ggml.tokens",
                GgufValue::Strs(tokens.iter().map(|t| t.to_string()).collect()),
            ),
            ("tokenizer.ggml.token_type", GgufValue::I32s(types.to_vec())),
        ];
        kvs.extend(extra);
        gguf_bytes(&kvs)
    }

    fn coder() -> Vec<u8> {
        vocabulary(
            &[
                "a",
                "<|fim_prefix|>",
                "<|fim_suffix|>",
                "<|fim_middle|>",
                "<|file_sep|>",
            ],
            &[1, 3, 3, 3, 3],
            Vec::new(),
        )
    }

    fn chat() -> Vec<u8> {
        let template = GgufValue::Str("{% for m in messages %}{{ m }}{% endfor %}".into());
        vocabulary(
            &["a", "<start_of_turn>"],
            &[1, 3],
            vec![("tokenizer.chat_template", template)],
        )
    }

    fn write(path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    fn ollama_manifest(root: &Path, manifest: &str, digest: &str, blob: Option<&[u8]>) {
        let text = serde_json::json!({
            "schemaVersion": 2,
            "layers": [
                {"mediaType": "application/vnd.ollama.image.projector", "digest": "sha256:00"},
                {"mediaType": "application/vnd.ollama.image.model", "digest": format!("sha256:{digest}")},
            ]
        });
        write(
            &root.join("manifests").join(manifest),
            text.to_string().as_bytes(),
        );
        if let Some(blob) = blob {
            write(&root.join("blobs").join(format!("sha256-{digest}")), blob);
        }
    }

    /// Every layout, in a directory of its own.
    fn machine(name: &str) -> (PathBuf, Places) {
        let root =
            std::env::temp_dir().join(format!("inkling-catalog-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let ollama = root.join("ollama");
        let library = "registry.ollama.ai/library";
        ollama_manifest(
            &ollama,
            &format!("{library}/coder/latest"),
            "c0de",
            Some(&coder()),
        );
        ollama_manifest(
            &ollama,
            &format!("{library}/chat/7b"),
            "c4a7",
            Some(&chat()),
        );
        ollama_manifest(&ollama, "registry.ollama.ai/someone/tuned/q4", "c0de", None);
        ollama_manifest(&ollama, "hf.co/bartowski/repo/Q4_K_M", "c0de", None);
        ollama_manifest(&ollama, &format!("{library}/missing/latest"), "dead", None);
        ollama_manifest(
            &ollama,
            &format!("{library}/escape/latest"),
            "../../x",
            None,
        );

        let lmstudio = root.join("lmstudio");
        write(&lmstudio.join("pub/one/model.gguf"), &coder());
        write(&lmstudio.join("pub/two/a.gguf"), &coder());
        write(&lmstudio.join("pub/two/b.gguf"), &coder());
        write(&lmstudio.join("pub/two/mmproj-model-f16.gguf"), &coder());
        write(&lmstudio.join("pub/two/README.md"), b"not a model");

        let hub = root.join("hub");
        let repo = hub.join("models--org--repo");
        write(
            &repo.join("refs/main"),
            b"2222222222222222222222222222222222222222\n",
        );
        write(
            &repo.join("snapshots/1111111111111111111111111111111111111111/old.gguf"),
            &coder(),
        );
        for (blob, bytes) in [("b1", coder()), ("b2", vec![0; 100])] {
            write(&repo.join("blobs").join(blob), &bytes);
        }
        fs::create_dir_all(repo.join("snapshots/2222222222222222222222222222222222222222"))
            .unwrap();
        let link = |blob: &str, name: &str| {
            std::os::unix::fs::symlink(
                format!("../../blobs/{blob}"),
                repo.join("snapshots/2222222222222222222222222222222222222222")
                    .join(name),
            )
            .unwrap()
        };
        link("b1", "new-00001-of-00002.gguf");
        link("b2", "new-00002-of-00002.gguf");
        link("b1", "mmproj.gguf");
        let multi = hub.join("models--org--multi/snapshots/r");
        write(&multi.join("x.gguf"), &coder());
        write(&multi.join("sub/y.gguf"), &chat());
        write(
            &hub.join("datasets--org--data/snapshots/r/d.gguf"),
            &coder(),
        );

        let places = Places {
            ollama: vec![ollama],
            lmstudio: vec![lmstudio, root.join("old-lmstudio")],
            hf_hub: Some(hub),
            inkling_cache: root.join("inkling"),
        };
        (root, places)
    }

    #[test]
    fn every_layout_is_found_under_its_names() {
        let (root, places) = machine("find");
        let names: Vec<String> = find(&places).into_iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "ollama:chat:7b",
                "ollama:coder:latest",
                "ollama:hf.co/bartowski/repo:Q4_K_M",
                "ollama:someone/tuned:q4",
                "lmstudio:pub/one",
                "lmstudio:pub/two/a.gguf",
                "lmstudio:pub/two/b.gguf",
                "hf:org/multi/sub/y.gguf",
                "hf:org/multi/x.gguf",
                "hf:org/repo",
            ]
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn names_resolve_to_their_files() {
        let (root, places) = machine("resolve");
        let resolve = |name: &str| resolve_in(&places, Path::new(name));
        let blob = root.join("ollama/blobs/sha256-c0de");
        for name in [
            "ollama:coder",
            "ollama:coder:latest",
            "ollama:library/coder",
            "ollama:registry.ollama.ai/library/coder:latest",
            "ollama:someone/tuned:q4",
            "ollama:hf.co/bartowski/repo:Q4_K_M",
        ] {
            assert_eq!(resolve(name), Ok(blob.clone()), "{name}");
        }
        let one = root.join("lmstudio/pub/one/model.gguf");
        assert_eq!(resolve("lmstudio:pub/one"), Ok(one.clone()));
        assert_eq!(resolve("lmstudio:pub/one/model.gguf"), Ok(one));
        assert_eq!(
            resolve("lmstudio:pub/two/b.gguf"),
            Ok(root.join("lmstudio/pub/two/b.gguf"))
        );
        let newest = root.join("hub/models--org--repo/snapshots/2222222222222222222222222222222222222222/new-00001-of-00002.gguf");
        assert_eq!(resolve("hf:org/repo"), Ok(newest));
        assert_eq!(
            resolve("hf:org/multi/sub/y.gguf"),
            Ok(root.join("hub/models--org--multi/snapshots/r/sub/y.gguf"))
        );
        let plain = root.join("lmstudio/pub/two/a.gguf");
        assert_eq!(resolve(plain.to_str().unwrap()), Ok(plain));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn unknown_and_ambiguous_names_list_what_there_is() {
        let (root, places) = machine("errors");
        let error = |name: &str| resolve_in(&places, Path::new(name)).unwrap_err();
        let unknown = error("ollama:x");
        assert!(
            unknown.starts_with(
                "no Ollama model `x:latest`; found: ollama:chat:7b, ollama:coder:latest, "
            ),
            "{unknown}"
        );
        assert!(unknown.contains("hf:org/repo"), "{unknown}");
        assert!(error("hf:org/none").starts_with("no Hugging Face model `org/none`; found: "));
        assert_eq!(
            error("lmstudio:pub/two"),
            "lmstudio:pub/two has several GGUF files; name one: lmstudio:pub/two/a.gguf, lmstudio:pub/two/b.gguf"
        );
        assert!(error("hf:org/multi").contains("hf:org/multi/sub/y.gguf, hf:org/multi/x.gguf"));
        let missing = error("coder");
        assert!(
            missing.starts_with("cannot open model coder: no such file; models found (names for --model): ollama:chat:7b"),
            "{missing}"
        );
        let nothing = Places {
            ollama: Vec::new(),
            lmstudio: Vec::new(),
            hf_hub: None,
            inkling_cache: root.join("inkling"),
        };
        assert_eq!(
            resolve_in(&nothing, Path::new("ollama:x")).unwrap_err(),
            "no Ollama model `x:latest`; found: none (see `inkling models`)"
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_listing_describes_each_model_and_warns_about_chat_models() {
        let (root, places) = machine("report");
        write(&places.inkling_cache.join(DEFAULT_MODEL_FILE), &coder());
        let coder = describe(&root.join("ollama/blobs/sha256-c0de")).unwrap();
        assert_eq!(coder.template, Some(Family::Qwen));
        assert_eq!(coder.architecture.as_deref(), Some("llama"));
        assert_eq!(coder.model_name.as_deref(), Some("Test Model"));
        assert!(!coder.chat_model);
        let chat = describe(&root.join("ollama/blobs/sha256-c4a7")).unwrap();
        assert_eq!(chat.template, Some(Family::PrefixOnly));
        assert!(chat.chat_model);
        let split = root.join("hub/models--org--repo/snapshots/2222222222222222222222222222222222222222/new-00001-of-00002.gguf");
        assert_eq!(
            describe(&split).unwrap().size,
            self::coder().len() as u64 + 100
        );

        let report = report(&places);
        assert!(
            report.starts_with("(the default model: no --model needed)\n"),
            "{report}"
        );
        let chat_entry =
            "ollama:chat:7b\n    \"Test Model\", 0 MB, architecture llama, template prefix-only\n";
        assert!(report.contains(chat_entry), "{report}");
        assert_eq!(report.matches(CHAT_MODEL_WARNING).count(), 2, "{report}");
        assert!(report.contains(
            "ollama:coder:latest\n    \"Test Model\", 0 MB, architecture llama, template qwen\n"
        ));
        assert!(report.contains("\nsearched: Ollama ("), "{report}");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn fim_tokens_are_found_as_llama_cpp_finds_them() {
        let family = |bytes: Vec<u8>| {
            let metadata = crate::gguf::read_metadata(std::io::Cursor::new(bytes)).unwrap();
            template::detect(&FileVocabulary::new(&metadata).unwrap()).family
        };
        // Typed as normal tokens, but llama.cpp makes FIM spellings control tokens.
        let codellama = vocabulary(
            &["a", "▁<PRE>", "▁<SUF>", "▁<MID>"],
            &[1, 1, 1, 1],
            Vec::new(),
        );
        assert_eq!(family(codellama), Family::CodeLlama);
        // Other spellings count only as special tokens.
        let normal = vocabulary(&["[PREFIX]", "[SUFFIX]"], &[1, 1], Vec::new());
        assert_eq!(family(normal), Family::PrefixOnly);
        let control = vocabulary(&["[PREFIX]", "[SUFFIX]"], &[3, 3], Vec::new());
        assert_eq!(family(control), Family::Codestral);
        let stated = vocabulary(
            &["a", "<p>", "<s>", "<m>"],
            &[1, 3, 3, 3],
            vec![
                ("tokenizer.ggml.prefix_token_id", GgufValue::U32(1)),
                ("tokenizer.ggml.fim_suf_token_id", GgufValue::U32(2)),
                ("tokenizer.ggml.fim_mid_token_id", GgufValue::U32(3)),
            ],
        );
        assert_eq!(family(stated), Family::Generic);
        let out_of_range = vocabulary(
            &["a"],
            &[1],
            vec![
                ("tokenizer.ggml.fim_pre_token_id", GgufValue::U32(7)),
                ("tokenizer.ggml.fim_suf_token_id", GgufValue::U32(8)),
                ("tokenizer.ggml.fim_mid_token_id", GgufValue::U32(9)),
            ],
        );
        assert_eq!(family(out_of_range), Family::PrefixOnly);
    }
}
