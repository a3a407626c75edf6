//! Prompt decorators and templates, compiled from their settings once per snapshot.
//!
//! A decorator adds messages before and after the client's conversation (`${consumer}`,
//! `${route}`, `${model}` and `${date}` replaced); it is applied by splicing the `messages`
//! array of the raw body (after its `[`, before its `]`), so the rest of the body is copied
//! verbatim, and a route without decorators leaves the body untouched. For Anthropic's
//! `/messages`, system messages go into `system` (as text blocks) instead.
//!
//! A template is a named prompt the client invokes as `"model": "template:NAME"` (or with a
//! `template` field) with a `variables` object; its `{{name}}` placeholders are replaced by
//! the typed, checked values, JSON-escaped. The expansion sets `model` and puts the
//! template's messages before the client's, before the request is routed.

use crate::body::{RequestBody, Rewrite};
use crate::error::GatewayError;
use crate::settings::{self, PromptRole, VariableType};
use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

/// Which request shape messages are added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI chat: every message in `messages`.
    OpenAi,
    /// Anthropic Messages: system messages in `system`, the others in `messages`.
    Anthropic,
}

/// A message ready to be spliced: its role and its text (not yet JSON-escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub role: PromptRole,
    pub content: String,
}

/// What a decorator's `${…}` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecoratorVar {
    Consumer,
    Route,
    Model,
    Date,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<V> {
    Text(String),
    Var(V),
}

#[derive(Debug, Clone)]
struct Compiled<V> {
    role: PromptRole,
    pieces: Vec<Piece<V>>,
}

/// A route's or a consumer's decorators.
#[derive(Debug, Clone, Default)]
pub struct Decorators {
    prepend: Vec<Compiled<DecoratorVar>>,
    append: Vec<Compiled<DecoratorVar>>,
}

/// The values of a decorator's variables for one request.
#[derive(Debug, Clone, Copy)]
pub struct DecoratorContext<'a> {
    /// Empty when the request has no consumer.
    pub consumer: &'a str,
    pub route: &'a str,
    pub model: &'a str,
    /// UTC `YYYY-MM-DD`.
    pub date: &'a str,
}

impl Decorators {
    pub fn is_empty(&self) -> bool {
        self.prepend.is_empty() && self.append.is_empty()
    }

    fn render(list: &[Compiled<DecoratorVar>], cx: &DecoratorContext<'_>) -> Vec<Rendered> {
        list.iter()
            .map(|m| Rendered {
                role: m.role,
                content: m
                    .pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Text(t) => t.as_str(),
                        Piece::Var(DecoratorVar::Consumer) => cx.consumer,
                        Piece::Var(DecoratorVar::Route) => cx.route,
                        Piece::Var(DecoratorVar::Model) => cx.model,
                        Piece::Var(DecoratorVar::Date) => cx.date,
                    })
                    .collect(),
            })
            .collect()
    }
}

/// The rewrite that adds the route's and the consumer's decorators to `body`: the route's
/// prepended messages, the consumer's, the client's, the consumer's appended ones, the
/// route's. Empty (the body sent as the same bytes) when neither has decorators.
pub fn decorate(
    body: &RequestBody,
    wire: Wire,
    layers: [Option<&Decorators>; 2],
    cx: &DecoratorContext<'_>,
) -> Result<Rewrite, GatewayError> {
    let [route, consumer] = layers;
    let (mut pre, mut post) = (Vec::new(), Vec::new());
    for d in [route, consumer].into_iter().flatten() {
        pre.extend(Decorators::render(&d.prepend, cx));
    }
    for d in [consumer, route].into_iter().flatten() {
        post.extend(Decorators::render(&d.append, cx));
    }
    if pre.is_empty() && post.is_empty() {
        return Ok(Rewrite::default());
    }
    let spans = Spans {
        messages: body.messages_span.clone(),
        system: body.system_span.clone(),
        object: object_span(body.bytes()),
    };
    Ok(Rewrite::from_edits(splice_edits(
        body.bytes(),
        &spans,
        wire,
        &pre,
        &post,
    )?))
}

/// Where the parts of a body that messages are added to are.
struct Spans {
    messages: Option<Range<usize>>,
    system: Option<Range<usize>>,
    /// The top-level object's `{` and `}`.
    object: Range<usize>,
}

fn object_span(bytes: &[u8]) -> Range<usize> {
    let open = bytes.iter().position(|b| *b == b'{').unwrap_or(0);
    let close = bytes.iter().rposition(|b| *b == b'}').unwrap_or(open);
    open..close
}

type Edit = (Range<usize>, Vec<u8>);

/// `{"role":…,"content":…}`, the content JSON-escaped.
pub fn message_json(m: &Rendered) -> Vec<u8> {
    let content = serde_json::to_string(&m.content).unwrap_or_default();
    format!(r#"{{"role":"{}","content":{content}}}"#, m.role.as_str()).into_bytes()
}

/// An Anthropic text block, the text JSON-escaped.
fn text_block(text: &str) -> Vec<u8> {
    let text = serde_json::to_string(text).unwrap_or_default();
    format!(r#"{{"type":"text","text":{text}}}"#).into_bytes()
}

fn join(items: &[Vec<u8>]) -> Vec<u8> {
    items.join(&b","[..])
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// The edits that add `pre` and `post` to the messages (and, for Anthropic, `system`).
fn splice_edits(
    bytes: &[u8],
    spans: &Spans,
    wire: Wire,
    pre: &[Rendered],
    post: &[Rendered],
) -> Result<Vec<Edit>, GatewayError> {
    let to_system = |m: &&Rendered| wire == Wire::Anthropic && m.role == PromptRole::System;
    let items = |list: &[Rendered], system: bool| -> Vec<Vec<u8>> {
        list.iter()
            .filter(|m| to_system(m) == system)
            .map(|m| match system {
                true => text_block(&m.content),
                false => message_json(m),
            })
            .collect()
    };
    let mut edits = Vec::new();
    let mut fields = Vec::new();
    let (msg_pre, msg_post) = (items(pre, false), items(post, false));
    if !msg_pre.is_empty() || !msg_post.is_empty() {
        match &spans.messages {
            Some(span) => edits.extend(array_edits(bytes, span, &msg_pre, &msg_post, "messages")?),
            None => fields.push(field("messages", &msg_pre, &msg_post)),
        }
    }
    let (sys_pre, sys_post) = (items(pre, true), items(post, true));
    if !sys_pre.is_empty() || !sys_post.is_empty() {
        match &spans.system {
            None => fields.push(field("system", &sys_pre, &sys_post)),
            Some(span) => edits.extend(system_edits(bytes, span, &sys_pre, &sys_post)?),
        }
    }
    if !fields.is_empty() {
        let at = spans.object.start + 1;
        let mut text = join(&fields);
        if !is_blank(&bytes[at..spans.object.end]) {
            text.push(b',');
        }
        edits.push((at..at, text));
    }
    Ok(edits)
}

/// `"name":[pre…,post…]`.
fn field(name: &str, pre: &[Vec<u8>], post: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("\"{name}\":").into_bytes();
    out.extend(array(pre, post));
    out
}

/// `[pre…,post…]`.
fn array(pre: &[Vec<u8>], post: &[Vec<u8>]) -> Vec<u8> {
    let all: Vec<Vec<u8>> = pre.iter().chain(post).cloned().collect();
    let mut out = b"[".to_vec();
    out.extend(join(&all));
    out.push(b']');
    out
}

/// Insert `pre` after the array's `[` and `post` before its `]`.
fn array_edits(
    bytes: &[u8],
    span: &Range<usize>,
    pre: &[Vec<u8>],
    post: &[Vec<u8>],
    name: &str,
) -> Result<Vec<Edit>, GatewayError> {
    let value = &bytes[span.clone()];
    if value.first() != Some(&b'[') || value.last() != Some(&b']') {
        return Err(GatewayError::Decorate(format!(
            "`{name}` must be an array for the gateway's prompt decorators."
        )));
    }
    let (open, close) = (span.start + 1, span.end - 1);
    if is_blank(&bytes[open..close]) {
        let all: Vec<Vec<u8>> = pre.iter().chain(post).cloned().collect();
        return Ok(vec![(open..open, join(&all))]);
    }
    let mut edits = Vec::new();
    if !pre.is_empty() {
        let mut text = join(pre);
        text.push(b',');
        edits.push((open..open, text));
    }
    if !post.is_empty() {
        let mut text = vec![b','];
        text.extend(join(post));
        edits.push((close..close, text));
    }
    Ok(edits)
}

/// Add text blocks to Anthropic's `system`: a string becomes a block between them, an array
/// gets them at its ends, `null` is replaced.
fn system_edits(
    bytes: &[u8],
    span: &Range<usize>,
    pre: &[Vec<u8>],
    post: &[Vec<u8>],
) -> Result<Vec<Edit>, GatewayError> {
    let value = &bytes[span.clone()];
    match value.first() {
        Some(b'[') => array_edits(bytes, span, pre, post, "system"),
        Some(b'"') => {
            let mut out = b"[".to_vec();
            for p in pre {
                out.extend_from_slice(p);
                out.push(b',');
            }
            out.extend_from_slice(br#"{"type":"text","text":"#);
            out.extend_from_slice(value);
            out.push(b'}');
            for p in post {
                out.push(b',');
                out.extend_from_slice(p);
            }
            out.push(b']');
            Ok(vec![(span.clone(), out)])
        }
        Some(b'n') => Ok(vec![(span.clone(), array(pre, post))]),
        _ => Err(GatewayError::Decorate(
            "`system` must be a string or an array of blocks for the gateway's prompt decorators."
                .into(),
        )),
    }
}

// ---- templates ----

/// A template variable: its type, allowed values (`enum`) and default.
#[derive(Debug, Clone)]
pub struct Variable {
    kind: VariableType,
    values: Vec<String>,
    /// The default, rendered.
    default: Option<String>,
}

/// A compiled prompt template.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    model: String,
    messages: Vec<Compiled<String>>,
    variables: BTreeMap<String, Variable>,
}

/// The model prefix that invokes a template.
pub const TEMPLATE_PREFIX: &str = "template:";

#[derive(serde::Deserialize)]
struct Invocation<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    template: Option<&'a RawValue>,
}

/// The top-level members of an object, in order, with their raw values.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

fn template_error(message: String) -> GatewayError {
    GatewayError::Template(message)
}

/// The template a body invokes: `"template": "NAME"`, else `"model": "template:NAME"`.
fn invoked(bytes: &[u8]) -> Result<Option<String>, GatewayError> {
    // Most bodies never mention a template: no parse for them.
    if !bytes.windows(8).any(|w| w == b"template") {
        return Ok(None);
    }
    let Ok(top) = serde_json::from_slice::<Invocation>(bytes) else {
        return Ok(None);
    };
    if let Some(raw) = top.template.filter(|r| r.get() != "null") {
        return serde_json::from_str::<String>(raw.get())
            .map(Some)
            .map_err(|_| {
                template_error("The `template` field must be a template's name (a string).".into())
            });
    }
    let model = top
        .model
        .and_then(|r| serde_json::from_str::<String>(r.get()).ok());
    Ok(model.and_then(|m| m.strip_prefix(TEMPLATE_PREFIX).map(str::to_string)))
}

/// Expand the template `bytes` invokes, if any: the new body (`model` set, the template's
/// messages before the client's, `template` and `variables` removed), or `None` when the
/// body invokes no template (it is then used as it is).
pub fn expand(
    templates: &HashMap<String, Template>,
    wire: Wire,
    bytes: &Bytes,
) -> Result<Option<Bytes>, GatewayError> {
    if templates.is_empty() {
        return Ok(None);
    }
    let Some(name) = invoked(bytes)? else {
        return Ok(None);
    };
    let template = templates
        .get(&name)
        .ok_or_else(|| template_error(format!("Unknown prompt template `{name}`.")))?;
    let members: Members =
        serde_json::from_slice(bytes).map_err(|e| GatewayError::InvalidJson(e.to_string()))?;
    let given = members
        .0
        .iter()
        .find(|(k, _)| k == "variables")
        .map(|(_, v)| *v);
    let values = template.values(given)?;
    let rendered = template.render(&values);
    Ok(Some(rebuild(&members, template, wire, &rendered)?.into()))
}

/// The body again: `model` first, then the client's members (`messages` and `system` with
/// the template's messages added), without `template` and `variables`; each kept member's
/// value is copied as it was.
fn rebuild(
    members: &Members<'_>,
    template: &Template,
    wire: Wire,
    rendered: &[Rendered],
) -> Result<Vec<u8>, GatewayError> {
    let model = serde_json::to_string(&template.model).unwrap_or_default();
    let mut parts: Vec<Vec<u8>> = vec![format!("\"model\":{model}").into_bytes()];
    let mut rest = b"{".to_vec();
    let mut spans = Spans {
        messages: None,
        system: None,
        object: 0..0,
    };
    for (key, value) in &members.0 {
        if matches!(key.as_str(), "model" | "template" | "variables") {
            continue;
        }
        if rest.len() > 1 {
            rest.push(b',');
        }
        rest.extend(serde_json::to_vec(key).unwrap_or_default());
        rest.push(b':');
        let start = rest.len();
        rest.extend_from_slice(value.get().as_bytes());
        match key.as_str() {
            "messages" => spans.messages = Some(start..rest.len()),
            "system" => spans.system = Some(start..rest.len()),
            _ => {}
        }
    }
    rest.push(b'}');
    spans.object = 0..rest.len() - 1;
    let edits = splice_edits(&rest, &spans, wire, rendered, &[])?;
    let rest = Rewrite::from_edits(edits).apply(&Bytes::from(rest));
    let inner = &rest[1..rest.len() - 1];
    if !is_blank(inner) {
        parts.push(inner.to_vec());
    }
    let mut out = b"{".to_vec();
    out.extend(join(&parts));
    out.push(b'}');
    Ok(out)
}

impl Template {
    /// The variables' values as text: the client's (checked) and the defaults.
    fn values(&self, given: Option<&RawValue>) -> Result<HashMap<&str, String>, GatewayError> {
        let given: serde_json::Map<String, serde_json::Value> = match given {
            None => serde_json::Map::new(),
            Some(raw) if raw.get() == "null" => serde_json::Map::new(),
            Some(raw) => serde_json::from_str(raw.get()).map_err(|_| {
                template_error(format!(
                    "`variables` of template `{}` must be an object.",
                    self.name
                ))
            })?,
        };
        if let Some(extra) = given.keys().find(|k| !self.variables.contains_key(*k)) {
            return Err(template_error(format!(
                "Template `{}` has no variable `{extra}`.",
                self.name
            )));
        }
        let mut out = HashMap::new();
        for (name, var) in &self.variables {
            let text = match (given.get(name), &var.default) {
                (Some(v), _) => check_value(var, v).map_err(|e| {
                    template_error(format!(
                        "Variable `{name}` of template `{}` {e}.",
                        self.name
                    ))
                })?,
                (None, Some(d)) => d.clone(),
                (None, None) => {
                    return Err(template_error(format!(
                        "Template `{}` needs the variable `{name}`.",
                        self.name
                    )))
                }
            };
            out.insert(name.as_str(), text);
        }
        Ok(out)
    }

    fn render(&self, values: &HashMap<&str, String>) -> Vec<Rendered> {
        self.messages
            .iter()
            .map(|m| Rendered {
                role: m.role,
                content: m
                    .pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Text(t) => t.as_str(),
                        Piece::Var(v) => values.get(v.as_str()).map_or("", |s| s.as_str()),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// A value of the variable's type as text; `Err` says what is wrong (after "Variable `x`").
fn check_value(var: &Variable, v: &serde_json::Value) -> Result<String, String> {
    use serde_json::Value;
    match (var.kind, v) {
        (VariableType::Text, Value::String(s)) => Ok(s.clone()),
        (VariableType::Number, Value::Number(n)) => Ok(n.to_string()),
        (VariableType::Boolean, Value::Bool(b)) => Ok(b.to_string()),
        (VariableType::Enum, Value::String(s)) if var.values.contains(s) => Ok(s.clone()),
        (VariableType::Enum, Value::String(s)) => Err(format!(
            "must be one of {}, not `{s}`",
            var.values.join(", ")
        )),
        (kind, _) => Err(format!("must be a {}", kind_word(kind))),
    }
}

fn kind_word(kind: VariableType) -> &'static str {
    match kind {
        VariableType::Text | VariableType::Enum => "string",
        VariableType::Number => "number",
        VariableType::Boolean => "boolean",
    }
}

// ---- the compiled set ----

/// Every prompt policy of a snapshot.
#[derive(Debug, Default)]
pub struct Prompts {
    /// Each route's decorators, by the route's index (`Gateway::routes`).
    pub routes: Vec<Decorators>,
    /// Each route's input moderation, by the route's index.
    pub moderation: Vec<Option<super::moderation::Moderation>>,
    /// Consumers with decorators, by name.
    pub consumers: HashMap<String, Decorators>,
    /// Templates by name.
    pub templates: HashMap<String, Template>,
}

/// A config error: the field and what is wrong with it.
pub type FieldError = (String, String);

impl Prompts {
    pub fn build(s: &settings::Settings) -> Result<Prompts, FieldError> {
        let mut out = Prompts::default();
        let names: Vec<&str> = s.routes.iter().map(|r| r.name.as_str()).collect();
        for (i, r) in s.routes.iter().enumerate() {
            let field = format!("routes[{i}] ({}).decorators", r.name);
            out.routes
                .push(build_decorators(&field, r.decorators.as_ref())?);
            let moderation = r
                .moderation
                .as_ref()
                .map(|m| super::moderation::Moderation::build(m, &names))
                .transpose()
                .map_err(|(f, e)| (format!("routes[{i}] ({}).moderation.{f}", r.name), e))?;
            out.moderation.push(moderation);
        }
        for (i, c) in s.consumers.iter().enumerate() {
            let field = format!("consumers[{i}] ({}).decorators", c.name);
            let d = build_decorators(&field, c.decorators.as_ref())?;
            if !d.is_empty() {
                out.consumers.insert(c.name.clone(), d);
            }
        }
        for (i, t) in s.templates.iter().enumerate() {
            let field = format!("templates[{i}] ({})", t.name);
            let built = build_template(&field, t)?;
            if out.templates.insert(t.name.clone(), built).is_some() {
                return Err((
                    format!("{field}.name"),
                    "a template of this name comes before".into(),
                ));
            }
        }
        Ok(out)
    }
}

fn build_decorators(
    field: &str,
    d: Option<&settings::DecoratorsSection>,
) -> Result<Decorators, FieldError> {
    let Some(d) = d else {
        return Ok(Decorators::default());
    };
    let list = |name: &str, l: &[settings::PromptMessage]| {
        l.iter()
            .enumerate()
            .map(|(j, m)| {
                let at = format!("{field}.{name}[{j}]");
                if m.role == PromptRole::Assistant {
                    return Err((
                        format!("{at}.role"),
                        "decorators add `system` or `user` messages".into(),
                    ));
                }
                let pieces =
                    decorator_pieces(&m.content).map_err(|e| (format!("{at}.content"), e))?;
                Ok(Compiled {
                    role: m.role,
                    pieces,
                })
            })
            .collect::<Result<Vec<_>, FieldError>>()
    };
    Ok(Decorators {
        prepend: list("prepend", &d.prepend)?,
        append: list("append", &d.append)?,
    })
}

/// A decorator's text: `${consumer}`, `${route}`, `${model}`, `${date}`; `$$` is a `$`.
fn decorator_pieces(text: &str) -> Result<Vec<Piece<DecoratorVar>>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        literal.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            literal.push('$');
            rest = tail;
            continue;
        }
        let Some(inner) = after.strip_prefix('{') else {
            literal.push('$');
            rest = after;
            continue;
        };
        let end = inner.find('}').ok_or("an unterminated `${`")?;
        let var = match &inner[..end] {
            "consumer" => DecoratorVar::Consumer,
            "route" => DecoratorVar::Route,
            "model" => DecoratorVar::Model,
            "date" => DecoratorVar::Date,
            other => {
                return Err(format!(
                    "unknown variable `${{{other}}}`: expected ${{consumer}}, ${{route}}, ${{model}} or ${{date}} (`$$` for a `$`)"
                ))
            }
        };
        if !literal.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Var(var));
        rest = &inner[end + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

/// A template's text: `{{name}}` (spaces inside allowed) names a variable.
fn template_pieces(text: &str) -> Result<Vec<Piece<String>>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find("{{") {
        if pos > 0 {
            pieces.push(Piece::Text(rest[..pos].to_string()));
        }
        let inner = &rest[pos + 2..];
        let end = inner.find("}}").ok_or("an unterminated `{{`")?;
        let name = inner[..end].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`{{{{{}}}}}` is not a variable name (letters, digits, `_`)",
                &inner[..end]
            ));
        }
        pieces.push(Piece::Var(name.to_string()));
        rest = &inner[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(pieces)
}

fn build_template(field: &str, t: &settings::TemplateSection) -> Result<Template, FieldError> {
    if t.name.is_empty() {
        return Err((format!("{field}.name"), "must not be empty".into()));
    }
    if t.model.is_empty() || t.model.starts_with(TEMPLATE_PREFIX) {
        return Err((
            format!("{field}.model"),
            "must name a model (not a template)".into(),
        ));
    }
    if t.messages.is_empty() {
        return Err((
            format!("{field}.messages"),
            "at least one message is required".into(),
        ));
    }
    let mut variables = BTreeMap::new();
    for (name, v) in &t.variables {
        let at = format!("{field}.variables.{name}");
        variables.insert(name.clone(), build_variable(&at, v)?);
    }
    let mut messages = Vec::new();
    for (j, m) in t.messages.iter().enumerate() {
        let at = format!("{field}.messages[{j}].content");
        let pieces = template_pieces(&m.content).map_err(|e| (at.clone(), e))?;
        for p in &pieces {
            if let Piece::Var(v) = p {
                if !variables.contains_key(v) {
                    return Err((
                        at,
                        format!("`{{{{{v}}}}}` is not one of the template's variables"),
                    ));
                }
            }
        }
        messages.push(Compiled {
            role: m.role,
            pieces,
        });
    }
    Ok(Template {
        name: t.name.clone(),
        model: t.model.clone(),
        messages,
        variables,
    })
}

fn build_variable(at: &str, v: &settings::TemplateVariableSection) -> Result<Variable, FieldError> {
    match (v.kind, v.values.is_empty()) {
        (VariableType::Enum, true) => {
            return Err((format!("{at}.values"), "an enum needs its values".into()))
        }
        (VariableType::Enum, false) | (_, true) => {}
        (_, false) => return Err((format!("{at}.values"), "only an enum has values".into())),
    }
    let mut var = Variable {
        kind: v.kind,
        values: v.values.clone(),
        default: None,
    };
    if let Some(d) = &v.default {
        let text = check_value(&var, d).map_err(|e| (format!("{at}.default"), e))?;
        var.default = Some(text);
    }
    Ok(var)
}

#[cfg(test)]
#[path = "prompts_tests.rs"]
mod tests;
