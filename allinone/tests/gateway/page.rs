//! The chat page's script is a tree of ES modules served without a build
//! step: every module the page imports is served as JavaScript with the page's
//! headers, and every name it imports is exported by the module it names.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

/// A gateway alone: the page needs no chat-core.
async fn gateway() -> anyhow::Result<(String, reqwest::Client)> {
    let addr = common::spawn_gateway("http://127.0.0.1:1", |_| {}).await?;
    let http = reqwest::Client::builder().timeout(common::TIMEOUT).build()?;
    Ok((format!("http://{addr}"), http))
}

/// The `src` of each `<script>` tag, with whether it is `type="module"`.
fn scripts(html: &str) -> Vec<(String, bool)> {
    html.split("<script")
        .skip(1)
        .map(|tag| {
            let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
            let src = attribute(tag, "src").unwrap_or_default();
            (src, attribute(tag, "type").as_deref() == Some("module"))
        })
        .collect()
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[start..].find('"')?;
    Some(tag[start..start + len].to_owned())
}

/// The import and re-export statements of a module, each as the names it
/// imports (`None` for `*` or a bare `import 'x'`) and its specifier.
fn imports(source: &str) -> Vec<(Option<Vec<String>>, String)> {
    let mut found = Vec::new();
    let mut rest = source;
    while let Some(at) = statement_start(rest) {
        let statement = &rest[at..];
        let end = statement.find(';').unwrap_or(statement.len());
        let text = &statement[..end];
        rest = &statement[end..];
        let Some(specifier) = text.rsplit(['\'', '"']).nth(1) else {
            continue;
        };
        if text.starts_with("export") && !text.contains(" from ") {
            continue;
        }
        let names = text
            .find('{')
            .zip(text.find('}'))
            .map(|(open, close)| bindings(&text[open + 1..close], |name, _| name));
        found.push((names, specifier.to_owned()));
    }
    found
}

/// Where the next `import`/`export … from` statement starts (at a line start).
fn statement_start(source: &str) -> Option<usize> {
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        if line.starts_with("import ") || (line.starts_with("export {") || line.starts_with("export *")) {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

/// `a, b as c` → the imported (`pick(a, a)`, `pick(b, c)`) names.
fn bindings(list: &str, pick: fn(String, String) -> String) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let mut parts = item.split(" as ").map(|p| p.trim().to_owned());
            let name = parts.next().unwrap_or_default();
            let alias = parts.next().unwrap_or_else(|| name.clone());
            pick(name, alias)
        })
        .collect()
}

/// The names a module exports.
fn exports(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    // Minified vendored libraries end with `...;export{a as B,...}` mid-line.
    for (at, _) in source.match_indices("export{") {
        let list = &source[at + "export{".len()..];
        let list = &list[..list.find('}').unwrap_or(list.len())];
        names.extend(bindings(list, |_, alias| alias));
    }
    for line in source.lines() {
        let Some(rest) = line.strip_prefix("export ") else {
            continue;
        };
        if let Some(list) = rest.strip_prefix('{') {
            let list = &list[..list.find('}').unwrap_or(list.len())];
            names.extend(bindings(list, |_, alias| alias));
            continue;
        }
        let rest = rest.strip_prefix("async ").unwrap_or(rest);
        for keyword in ["function* ", "function ", "const ", "let ", "var ", "class "] {
            if let Some(declared) = rest.strip_prefix(keyword) {
                let name: String = declared
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
                    .collect();
                names.insert(name);
            }
        }
    }
    names
}

/// `specifier` resolved against the module at `base` (both URL paths).
fn resolve(base: &str, specifier: &str) -> String {
    assert!(
        specifier.starts_with("./") || specifier.starts_with("../") || specifier.starts_with('/'),
        "{base} imports {specifier:?}: a bare specifier needs a build step or an import map"
    );
    let joined = if specifier.starts_with('/') {
        specifier.to_owned()
    } else {
        format!("{}{specifier}", &base[..=base.rfind('/').unwrap_or(0)])
    };
    let mut segments: Vec<&str> = Vec::new();
    for segment in joined.split('/').skip(1) {
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

#[tokio::test]
async fn every_module_the_page_imports_is_served_as_javascript() -> anyhow::Result<()> {
    // Arrange
    let (base, http) = gateway().await?;
    let page = http.get(format!("{base}/")).send().await?;
    assert_eq!(page.status(), 200);
    let html = page.text().await?;
    let scripts = scripts(&html);
    assert_eq!(scripts.len(), 1, "one entry script: {scripts:?}");
    let (entry, is_module) = scripts[0].clone();
    assert!(is_module, "the entry {entry} is loaded as a module");

    // Act: walk the import graph from the entry.
    let mut sources = BTreeMap::new();
    let mut queue = VecDeque::from([entry.clone()]);
    while let Some(path) = queue.pop_front() {
        if sources.contains_key(&path) {
            continue;
        }
        let response = http.get(format!("{base}{path}")).send().await?;
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            header("content-type").starts_with("text/javascript"),
            "{path}: {}",
            header("content-type")
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        assert!(
            header("content-security-policy").contains("default-src 'self'"),
            "{path}"
        );
        let source = response.text().await?;
        for (_, specifier) in imports(&source) {
            queue.push_back(resolve(&path, &specifier));
        }
        sources.insert(path, source);
    }

    // Assert: every imported name is exported where it is imported from.
    for (path, source) in &sources {
        for (names, specifier) in imports(source) {
            let target = resolve(path, &specifier);
            let exported = exports(&sources[&target]);
            for name in names.into_iter().flatten() {
                assert!(
                    exported.contains(&name),
                    "{path} imports {name} from {target}, which does not export it"
                );
            }
        }
    }
    // ... and every module on disk is part of the page.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/static/js");
    for file in std::fs::read_dir(&dir)? {
        let name = file?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".js") {
            assert!(
                sources.contains_key(&format!("/js/{name}")),
                "static/js/{name} is not imported by the page"
            );
        }
    }
    assert!(
        sources.len() > 1,
        "the entry imports modules: {:?}",
        sources.keys()
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_module_is_a_json_404() -> anyhow::Result<()> {
    let (base, http) = gateway().await?;
    for path in ["/js/nope.js", "/js/", "/js/..%2Fapp.js"] {
        let response = http.get(format!("{base}{path}")).send().await?;
        assert_eq!(response.status(), 404, "{path}");
        let content_type = response.headers()["content-type"].to_str()?.to_owned();
        assert!(
            content_type.starts_with("application/json"),
            "{path}: {content_type}"
        );
    }
    Ok(())
}

#[test]
fn the_import_parser_reads_the_forms_the_page_uses() {
    let source = "// import { no } from './comment.js';\n\
                  import { a, b as c } from './x.js';\n\
                  import {\n  d,\n  e,\n} from \"../y.js\";\n\
                  import './side.js';\n\
                  export { f } from './z.js';\n\
                  export const g = 1;\n\
                  export async function h() {}\n\
                  export class I {}\n\
                  const j = 2;\nexport { j as k };\nvar l=1;export{l as L};\n";
    assert_eq!(
        imports(source),
        vec![
            (Some(vec!["a".into(), "b".into()]), "./x.js".into()),
            (Some(vec!["d".into(), "e".into()]), "../y.js".into()),
            (None, "./side.js".into()),
            (Some(vec!["f".into()]), "./z.js".into()),
        ]
    );
    let exported: Vec<_> = exports(source).into_iter().collect();
    assert_eq!(exported, ["I", "L", "f", "g", "h", "k"]);
    assert_eq!(resolve("/app.js", "./js/a.js"), "/js/a.js");
    assert_eq!(resolve("/js/a.js", "./b.js"), "/js/b.js");
    assert_eq!(resolve("/js/a.js", "../app.js"), "/app.js");
}
