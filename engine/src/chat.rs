//! Chat templates: the model's own Jinja template (Hugging Face style, rendered with minijinja the
//! way transformers' `apply_chat_template` renders it with jinja2) or a built-in Gemma 3 / Gemma 4
//! one, plus removal of a leaked thought prelude from a reply.

use crate::session::Role;
use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("chat template: {0}")]
    Template(String),
    #[error("no built-in chat template for model family {0:?} (expected gemma3 or gemma4)")]
    UnknownFamily(String),
}

fn template_err(e: Error) -> ChatError {
    // `{:#}` includes the template line the error points at.
    ChatError::Template(format!("{e:#}"))
}

/// One chat message. `images`/`audios` placeholders are rendered before the text (Gemma expects
/// media first); the session later expands each placeholder to the encoder's soft tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    pub images: usize,
    pub audios: usize,
}

impl ChatMessage {
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            images: 0,
            audios: 0,
        }
    }

    /// The message as transformers passes it to a template: a plain string, or a content list
    /// (`{"type": "image"}`.., `{"type": "audio"}`.., `{"type": "text", "text": ..}`) when media
    /// is attached.
    fn to_json(&self) -> serde_json::Value {
        if self.images == 0 && self.audios == 0 {
            return json!({"role": self.role, "content": self.content});
        }
        let mut parts = Vec::with_capacity(self.images + self.audios + 1);
        parts.extend((0..self.images).map(|_| json!({"type": "image"})));
        parts.extend((0..self.audios).map(|_| json!({"type": "audio"})));
        parts.push(json!({"type": "text", "text": self.content}));
        json!({"role": self.role, "content": parts})
    }
}

/// Gemma 3's format (as google's template renders it): the system text joins the first user turn,
/// `assistant` becomes `model`, roles must alternate, images render as `<start_of_image>`.
const GEMMA3_TEMPLATE: &str = r#"{{ bos_token }}
{%- set first = messages[0] if messages else none -%}
{%- if first and first['role'] == 'system' -%}
    {%- if first['content'] is string -%}
        {%- set system_prefix = first['content'] + '\n\n' -%}
    {%- else -%}
        {%- set system_prefix = first['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set turns = messages[1:] -%}
{%- else -%}
    {%- set system_prefix = '' -%}
    {%- set turns = messages -%}
{%- endif -%}
{%- for message in turns -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif -%}
    {{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' + (system_prefix if loop.first else '') }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- else -%}
        {%- for part in message['content'] -%}
            {%- if part['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif part['type'] == 'text' -%}
                {{ part['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}
"#;

/// Gemma 4's format (spec §7): an optional system turn (system text, and `<|think|>` first when
/// `enable_thinking`), `<|turn>{role}\n{text}<turn|>\n` turns with `assistant` as `model`, media
/// as single `<|image|>` / `<|audio|>` placeholders, thought channels removed from model turns.
const GEMMA4_TEMPLATE: &str = r#"{%- macro without_thought(text) -%}
    {%- set ns = namespace(out='') -%}
    {%- for piece in text.split('<channel|>') -%}
        {%- set ns.out = ns.out + (piece.split('<|channel>')[0] if '<|channel>' in piece else piece) -%}
    {%- endfor -%}
    {{- ns.out | trim -}}
{%- endmacro -%}
{{- bos_token -}}
{%- set thinking = enable_thinking is defined and enable_thinking -%}
{%- set has_system = messages and messages[0]['role'] in ['system', 'developer'] -%}
{%- if thinking or has_system -%}
    {{- '<|turn>system\n' -}}
    {%- if thinking -%}
        {{- '<|think|>\n' -}}
    {%- endif -%}
    {%- if has_system -%}
        {%- if messages[0]['content'] is string -%}
            {{- messages[0]['content'] | trim -}}
        {%- else -%}
            {%- for part in messages[0]['content'] -%}
                {{- part['text'] | trim + ' ' -}}
            {%- endfor -%}
        {%- endif -%}
    {%- endif -%}
    {{- '<turn|>\n' -}}
{%- endif -%}
{%- for message in (messages[1:] if has_system else messages) -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {{- '<|turn>' + role + '\n' -}}
    {%- if message['content'] is string -%}
        {{- without_thought(message['content']) if role == 'model' else message['content'] | trim -}}
    {%- else -%}
        {%- for part in message['content'] -%}
            {%- if part['type'] == 'text' -%}
                {{- without_thought(part['text']) if role == 'model' else part['text'] | trim -}}
            {%- elif part['type'] in ['image', 'audio', 'video'] -%}
                {{- '<|' + part['type'] + '|>' -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{- '<turn|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|turn>model\n' -}}
{%- endif -%}
"#;

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    variables: BTreeMap<String, serde_json::Value>,
}

const TEMPLATE_NAME: &str = "chat";

/// Template instructions one render may execute. Real chat templates (tools included) use well
/// under a million for long conversations; this bounds a hostile template (nested `range` loops)
/// to about a second, so a render never needs to be interrupted.
const RENDER_FUEL: u64 = 20_000_000;

/// Largest rendered prompt (bytes); far beyond any context the engine can hold.
const MAX_RENDER_BYTES: usize = 64 << 20;

/// Macro / include nesting a template may use (real templates nest a few levels).
const MAX_RECURSION: usize = 64;

/// Refuses a `set` that names its own target twice on the right (`set s = s + s`): in a loop
/// that doubles a string per step, which no instruction budget bounds in memory.
fn check_self_doubling(source: &str) -> Result<(), ChatError> {
    let mut rest = source;
    while let Some(i) = rest.find("{%") {
        let tag = &rest[i + 2..];
        let end = tag.find("%}").unwrap_or(tag.len());
        let body = tag[..end].trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        if let Some(assign) = body.strip_prefix("set ")
            && let Some((target, value)) = assign.split_once('=')
        {
            let target = target.trim();
            let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
            // Words inside string literals (`message['role']`) are not variables.
            let mut code = String::with_capacity(value.len());
            let mut quote = None;
            for c in value.chars() {
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None if c == '\'' || c == '"' => quote = Some(c),
                    None => code.push(c),
                }
            }
            let uses = code
                .split(|c: char| !is_word(c))
                .filter(|w| *w == target)
                .count();
            if !target.is_empty() && uses >= 2 {
                return Err(ChatError::Template(format!(
                    "`{{% {body} %}}` uses '{target}' twice to build itself; such a template \
                     can grow without bound and is refused"
                )));
            }
        }
        rest = &tag[end.min(tag.len())..];
    }
    Ok(())
}

/// An `io::Write` that fails once more than `left` bytes were written.
struct Capped {
    out: Vec<u8>,
    left: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.left {
            return Err(std::io::Error::other(format!(
                "the rendered prompt exceeds {} MiB",
                MAX_RENDER_BYTES >> 20
            )));
        }
        self.left -= buf.len();
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ChatTemplate {
    /// The model's own Jinja template when present, else a built-in one for the family ("gemma3" | "gemma4").
    pub fn new(template: Option<&str>, family: &str, bos_token: &str) -> Result<Self, ChatError> {
        let source = match template {
            Some(t) if !t.trim().is_empty() => without_generation_tags(t),
            _ => Self::builtin(family)?.to_string(),
        };
        check_self_doubling(&source)?;
        let mut env = Environment::new();
        env.set_fuel(Some(RENDER_FUEL));
        env.set_recursion_limit(MAX_RECURSION);
        // transformers' jinja2 environment: trim_blocks + lstrip_blocks, no trailing newline.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(template_err)?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            variables: BTreeMap::new(),
        })
    }

    /// The built-in template source for a family.
    pub fn builtin(family: &str) -> Result<&'static str, ChatError> {
        match family {
            "gemma3" | "gemma3_text" => Ok(GEMMA3_TEMPLATE),
            "gemma4" | "gemma4_text" => Ok(GEMMA4_TEMPLATE),
            other => Err(ChatError::UnknownFamily(other.to_string())),
        }
    }

    /// An extra template variable, like `enable_thinking`, `eos_token` or `tools`.
    pub fn set_variable(&mut self, name: &str, value: serde_json::Value) {
        self.variables.insert(name.to_string(), value);
    }

    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let mut ctx: BTreeMap<String, serde_json::Value> = self.variables.clone();
        ctx.insert(
            "messages".into(),
            serde_json::Value::Array(messages.iter().map(ChatMessage::to_json).collect()),
        );
        ctx.insert("bos_token".into(), json!(self.bos_token));
        // transformers passes these as None when unused (`tools is none` holds, not undefined).
        for name in ["tools", "documents"] {
            ctx.entry(name.into()).or_insert(serde_json::Value::Null);
        }
        ctx.insert("add_generation_prompt".into(), json!(add_generation_prompt));
        let tmpl = self.env.get_template(TEMPLATE_NAME).map_err(template_err)?;
        let mut out = Capped {
            out: Vec::new(),
            left: MAX_RENDER_BYTES,
        };
        tmpl.render_captured_to(Value::from_serialize(&ctx), &mut out)
            .map_err(template_err)?;
        String::from_utf8(out.out)
            .map_err(|_| ChatError::Template("the rendered prompt is not valid UTF-8".into()))
    }
}

/// Marks message `i`'s place in a skeleton render: private-use characters that no template
/// trims or escapes and no tokenizer treats as special.
fn sentinel(i: usize) -> String {
    format!("\u{E000}cellm-message-{i}\u{E001}")
}

impl ChatTemplate {
    /// Renders `messages` and encodes the result so that only the template's own markers are
    /// control tokens: a special token's spelling inside a user, system or tool message (say a
    /// pasted `<end_of_turn>`) is encoded as plain text and cannot forge a turn. Assistant
    /// messages are the model's own output and keep the template's handling.
    ///
    /// The template is rendered once with the real contents and once with a sentinel in place
    /// of each such message; the real render is then split where the sentinels were, and the
    /// pieces of message text are encoded with [`Tokenizer::encode_plain`]. Without special
    /// spellings in any message this is exactly `encode(render(messages))`.
    pub fn encode(
        &self,
        tokenizer: &crate::tokenizer::Tokenizer,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, ChatError> {
        let tok_err = |e: crate::tokenizer::TokenizerError| ChatError::Template(e.to_string());
        let text = self.render(messages, add_generation_prompt)?;
        let guarded: Vec<usize> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role != Role::Assistant && tokenizer.contains_special(&m.content))
            .map(|(i, _)| i)
            .collect();
        if guarded.is_empty() {
            return tokenizer.encode(&text, false).map_err(tok_err);
        }
        let skeleton_msgs: Vec<ChatMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut m = m.clone();
                if guarded.contains(&i) {
                    m.content = sentinel(i);
                }
                m
            })
            .collect();
        let skeleton = self.render(&skeleton_msgs, add_generation_prompt)?;
        // How the template wrote each message's text: as is or trimmed (the Gemma templates
        // trim); the one whose substitution reproduces the real render is the right one.
        let transforms: [fn(&str) -> &str; 4] = [|s| s, str::trim, str::trim_start, str::trim_end];
        let pieces = transforms.iter().find_map(|f| {
            let mut pieces: Vec<(bool, &str)> = Vec::new();
            let mut rest = skeleton.as_str();
            let mut rebuilt = String::with_capacity(text.len());
            while let Some((at, i)) = guarded
                .iter()
                .filter_map(|&i| rest.find(&sentinel(i)).map(|at| (at, i)))
                .min()
            {
                pieces.push((false, &rest[..at]));
                rebuilt.push_str(&rest[..at]);
                let content = f(&messages[i].content);
                pieces.push((true, content));
                rebuilt.push_str(content);
                rest = &rest[at + sentinel(i).len()..];
            }
            pieces.push((false, rest));
            rebuilt.push_str(rest);
            (rebuilt == text).then_some(pieces)
        });
        let Some(pieces) = pieces else {
            return Err(ChatError::Template(
                "a message spells a control token and this chat template rewrites message \
                 text in a way that does not let cellm keep it as plain text"
                    .into(),
            ));
        };
        let mut ids = Vec::new();
        for (plain, piece) in pieces {
            if piece.is_empty() {
                continue;
            }
            ids.extend(if plain {
                tokenizer.encode_plain(piece).map_err(tok_err)?
            } else {
                tokenizer.encode(piece, false).map_err(tok_err)?
            });
        }
        Ok(ids)
    }
}

/// transformers' `{% generation %}..{% endgeneration %}` marks assistant text for training masks
/// and renders its body unchanged; turn it into an always-true `if` so whitespace control on the
/// tags still applies.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let trimmed = inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        let replacement = match trimmed {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                out.push_str("{%");
                out.push_str(&inner.replacen(trimmed, r, 1));
                out.push_str("%}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `json.dumps(x, ensure_ascii=False, indent=.., separators=.., sort_keys=..)`, as transformers'
/// own `tojson` filter (jinja's escapes HTML characters; Python's separators differ from serde's).
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([a, b]) => (a.clone(), b.clone()),
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let mut out = String::new();
    let opts = PyJson {
        indent,
        item_sep,
        key_sep,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    opts.write(&json, 0, &mut out);
    Ok(Value::from(out))
}

struct PyJson {
    indent: Option<usize>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

impl PyJson {
    fn newline(&self, depth: usize, out: &mut String) {
        if let Some(n) = self.indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    }

    fn string(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && !c.is_ascii()) => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    fn write(&self, v: &serde_json::Value, depth: usize, out: &mut String) {
        use serde_json::Value as J;
        match v {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Number(n) => out.push_str(&n.to_string()),
            J::String(s) => self.string(s, out),
            J::Array(items) => {
                if items.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(depth + 1, out);
                    self.write(item, depth + 1, out);
                }
                self.newline(depth, out);
                out.push(']');
            }
            J::Object(map) => {
                if map.is_empty() {
                    out.push_str("{}");
                    return;
                }
                let mut entries: Vec<_> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (k, val)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(depth + 1, out);
                    self.string(k, out);
                    out.push_str(&self.key_sep);
                    self.write(val, depth + 1, out);
                }
                self.newline(depth, out);
                out.push('}');
            }
        }
    }
}

/// `datetime.now().strftime(format)` for the common directives (UTC; templates use it for a
/// "today is" line).
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(secs, &format)
}

fn strftime(unix_secs: i64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let sod = unix_secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let m = (month - 1) as usize;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('B') => out.push_str(MONTHS[m]),
            Some('b') => out.push_str(&MONTHS[m][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{:02}", sod / 3600)),
            Some('M') => out.push_str(&format!("{:02}", sod / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", sod % 60)),
            Some('j') => out.push_str(&format!("{:03}", doy_from_jan(year, month, day))),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn doy_from_jan(year: i64, month: i64, day: i64) -> i64 {
    const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    CUM[(month - 1) as usize] + day + i64::from(leap && month > 2)
}

const CHANNEL_OPEN: &str = "<|channel>";
const CHANNEL_CLOSE: &str = "<channel|>";

/// Removes a leaked thought prelude from a final reply: every `<|channel>..<channel|>` block
/// (an unclosed one runs to the end), and text before an orphan `<channel|>` (the reply began
/// inside the channel, e.g. with a bare "thought\n..." whose opener was in the prompt or skipped).
pub fn strip_thought(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut removed = false;
    // A closer before any opener: the reply began inside the channel.
    if let Some(c) = rest.find(CHANNEL_CLOSE)
        && rest.find(CHANNEL_OPEN).is_none_or(|o| c < o)
    {
        rest = &rest[c + CHANNEL_CLOSE.len()..];
        removed = true;
    }
    while let Some(o) = rest.find(CHANNEL_OPEN) {
        out.push_str(&rest[..o]);
        removed = true;
        let after = &rest[o + CHANNEL_OPEN.len()..];
        rest = match after.find(CHANNEL_CLOSE) {
            Some(c) => &after[c + CHANNEL_CLOSE.len()..],
            // An unclosed channel runs to the end.
            None => "",
        };
    }
    out.push_str(rest);
    if removed {
        out.trim_start().to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(t: &str) -> ChatMessage {
        ChatMessage::text(Role::User, t)
    }

    #[test]
    fn chat_gemma3_builtin_matches_the_documented_format() {
        let t = ChatTemplate::new(None, "gemma3", "<bos>").unwrap();
        let sys = ChatMessage::text(Role::System, "Be brief.");
        let out = t.render(&[sys, user(" Hi ")], true).unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
        let img = ChatMessage {
            images: 1,
            ..user("What is this?")
        };
        let out = t.render(&[img], false).unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\n<start_of_image>What is this?<end_of_turn>\n"
        );
    }

    #[test]
    fn chat_gemma3_rejects_non_alternating_roles() {
        let t = ChatTemplate::new(None, "gemma3", "<bos>").unwrap();
        let err = t.render(&[user("a"), user("b")], true).unwrap_err();
        assert!(err.to_string().contains("alternate"), "{err}");
    }

    #[test]
    fn chat_gemma4_builtin_matches_the_spec() {
        let mut t = ChatTemplate::new(None, "gemma4", "<bos>").unwrap();
        let msgs = [
            ChatMessage::text(Role::System, "sys"),
            ChatMessage {
                images: 1,
                audios: 1,
                ..user("look\n")
            },
            ChatMessage::text(Role::Assistant, "<|channel>thought\nhmm<channel|>ok"),
            user("more"),
        ];
        let out = t.render(&msgs, true).unwrap();
        assert_eq!(
            out,
            "<bos><|turn>system\nsys<turn|>\n<|turn>user\n<|image|><|audio|>look<turn|>\n\
             <|turn>model\nok<turn|>\n<|turn>user\nmore<turn|>\n<|turn>model\n"
        );
        t.set_variable("enable_thinking", serde_json::Value::Bool(true));
        let out = t.render(&[user("q")], true).unwrap();
        assert_eq!(
            out,
            "<bos><|turn>system\n<|think|>\n<turn|>\n<|turn>user\nq<turn|>\n<|turn>model\n"
        );
    }

    #[test]
    fn chat_model_template_wins_and_unknown_family_errors() {
        let t = ChatTemplate::new(Some("{{ bos_token }}{{ messages[0].content }}"), "x", "<s>")
            .unwrap();
        assert_eq!(t.render(&[user("hey")], false).unwrap(), "<s>hey");
        assert!(matches!(
            ChatTemplate::new(None, "llama", "<s>"),
            Err(ChatError::UnknownFamily(_))
        ));
        assert!(ChatTemplate::new(Some("{% if %}"), "gemma3", "").is_err());
    }

    #[test]
    fn chat_hf_template_features() {
        // generation tags, python methods, raise_exception, tojson with Python separators,
        // trim_blocks/lstrip_blocks.
        let src = "{% for m in messages %}\n  {% generation %}{{ m.content.strip().upper() }}{% endgeneration %}\n{% endfor %}\
                   {{ {'a': [1, 'é']} | tojson }}|{{ messages[0].get('role') }}";
        let t = ChatTemplate::new(Some(src), "gemma3", "").unwrap();
        assert_eq!(
            t.render(&[user("  x ")], false).unwrap(),
            "X{\"a\": [1, \"é\"]}|user"
        );
        let t = ChatTemplate::new(Some("{{ raise_exception('nope') }}"), "gemma3", "").unwrap();
        assert!(
            t.render(&[], false)
                .unwrap_err()
                .to_string()
                .contains("nope")
        );
    }

    #[test]
    fn chat_strftime() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        assert_eq!(
            strftime(1_709_211_909, "%d %b %Y %H:%M:%S %A %j %B %y %m"),
            "29 Feb 2024 13:05:09 Thursday 060 February 24 02"
        );
    }

    #[test]
    fn chat_strip_thought_cases() {
        let cases = [
            ("plain answer", "plain answer"),
            (
                "<|channel>thought\nLet me think.<channel|>The answer is 4.",
                "The answer is 4.",
            ),
            (
                "<|channel>thought\nA<channel|>\n\nB<|channel>thought\nC<channel|>D",
                "BD",
            ),
            ("thought\nreasoning here<channel|>Final.", "Final."),
            ("Answer<|channel>thought\nunfinished", "Answer"),
            ("<|channel>thought\nnever closed", ""),
            ("  spaced <b>html</b>", "  spaced <b>html</b>"),
        ];
        for (input, want) in cases {
            assert_eq!(strip_thought(input), want, "{input:?}");
        }
    }
}
