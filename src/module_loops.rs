//! A test that keeps the modules of this crate layered: no module may import, directly or
//! through others, a module that imports it back. It reads `src/` with `syn`, takes every path
//! a module names outside its tests (`use` trees, and `crate::`, `super::` and `self::` paths in
//! code), resolves each to the deepest module file it reaches, and fails on any circle, naming
//! its modules and the arrows that close it. A `pub use child::Item` in a parent counts as the
//! parent importing the child.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use syn::visit::Visit;

/// A module by its path from the crate root (`["realtime", "ws"]`); the root is empty.
type Module = Vec<String>;

/// Every module file under `src/` (the binary's `main.rs` is another crate and left out).
fn modules(src: &Path) -> BTreeMap<Module, syn::File> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") || path.ends_with("main.rs") {
                continue;
            }
            let relative = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut module: Module = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if module
                .last()
                .is_some_and(|last| last == "mod" || last == "lib")
            {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read module");
            let file = syn::parse_file(&text)
                .unwrap_or_else(|err| panic!("{} does not parse: {err}", path.display()));
            found.insert(module, file);
        }
    }
    found
}

/// Whether an item only exists in tests.
fn test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Meta>()
                .is_ok_and(|meta| meta.path().is_ident("test"))
    })
}

/// Collects the paths one module names, as written.
#[derive(Default)]
struct Named {
    paths: Vec<Vec<String>>,
}

impl Named {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                let mut path = prefix.clone();
                if name.ident != "self" {
                    path.push(name.ident.to_string());
                }
                self.paths.push(path);
            }
            syn::UseTree::Rename(rename) => {
                let mut path = prefix.clone();
                path.push(rename.ident.to_string());
                self.paths.push(path);
            }
            syn::UseTree::Glob(_) => self.paths.push(prefix.clone()),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Named {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(item) => &item.attrs,
            syn::Item::Fn(item) => &item.attrs,
            syn::Item::Impl(item) => &item.attrs,
            syn::Item::Use(item) => &item.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !test_only(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    /// `pub(super)` and `pub(in crate::x)` name who may see an item, not what it uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if let Some(first) = path.segments.first()
            && ["crate", "super", "self"].contains(&first.ident.to_string().as_str())
        {
            self.paths
                .push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        }
        syn::visit::visit_path(self, path);
    }
}

/// The module that `path`, named in `from`, reaches: the deepest module file along it.
fn resolve(
    from: &Module,
    path: &[String],
    known: &BTreeSet<Module>,
    children: &BTreeSet<String>,
) -> Option<Module> {
    let mut absolute: Module = match path.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        Some("self") => from.clone(),
        Some("super") => {
            let mut parent = from.clone();
            let supers = path.iter().take_while(|s| *s == "super").count();
            for _ in 0..supers {
                parent.pop()?;
            }
            parent.extend(path[supers..].iter().cloned());
            return deepest(parent, known);
        }
        Some(child) if children.contains(child) => from.clone(),
        // Another crate, a prelude or local name.
        _ => return None,
    };
    let skip = usize::from(matches!(
        path.first().map(String::as_str),
        Some("crate" | "self")
    ));
    absolute.extend(path[skip..].iter().cloned());
    deepest(absolute, known)
}

fn deepest(mut path: Module, known: &BTreeSet<Module>) -> Option<Module> {
    while !path.is_empty() {
        if known.contains(&path) {
            return Some(path);
        }
        path.pop();
    }
    None
}

/// The strongly connected groups of more than one module (Tarjan's algorithm).
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, module: &'a Module) {
            let n = self.index.len();
            self.index.insert(module, n);
            self.low.insert(module, n);
            self.stack.push(module);
            for next in self.edges.get(module).into_iter().flatten() {
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[module].min(self.low[next]);
                    self.low.insert(module, low);
                } else if self.stack.contains(&next) {
                    let low = self.low[module].min(self.index[next]);
                    self.low.insert(module, low);
                }
            }
            if self.low[module] == self.index[module] {
                let mut group = Vec::new();
                while let Some(top) = self.stack.pop() {
                    group.push(top.clone());
                    if top == module {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.found.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for module in edges.keys() {
        if !walk.index.contains_key(module) {
            walk.visit(module);
        }
    }
    walk.found
}

/// Every import arrow between the modules of the crate at `src`.
fn arrows(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let files = modules(src);
    let known: BTreeSet<Module> = files.keys().cloned().collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in &files {
        let children: BTreeSet<String> = known
            .iter()
            .filter(|other| other.len() == module.len() + 1 && other.starts_with(module))
            .filter_map(|child| child.last().cloned())
            .collect();
        let mut named = Named::default();
        named.visit_file(file);
        let targets = edges.entry(module.clone()).or_default();
        for path in &named.paths {
            if let Some(target) = resolve(module, path, &known, &children)
                && target != *module
            {
                targets.insert(target);
            }
        }
    }
    edges
}

fn show(module: &Module) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = arrows(&src);
    assert!(edges.len() > 20, "read only {} modules", edges.len());
    let found = circles(&edges);
    let described: Vec<String> = found
        .iter()
        .map(|group| {
            let arrows: Vec<String> = group
                .iter()
                .flat_map(|from| {
                    edges[from]
                        .iter()
                        .filter(|to| group.contains(to))
                        .map(move |to| format!("{} -> {}", show(from), show(to)))
                })
                .collect();
            arrows.join(", ")
        })
        .collect();
    assert!(
        found.is_empty(),
        "modules that import each other: {}",
        described.join("; ")
    );
}

#[test]
fn a_circle_is_found_and_a_layering_is_not() {
    let module = |path: &str| -> Module { path.split("::").map(str::to_owned).collect() };
    let mut edges = BTreeMap::new();
    edges.insert(module("a"), BTreeSet::from([module("b")]));
    edges.insert(module("b"), BTreeSet::from([module("c")]));
    edges.insert(module("c"), BTreeSet::new());
    assert!(circles(&edges).is_empty());
    edges.insert(module("c"), BTreeSet::from([module("a")]));
    assert_eq!(
        circles(&edges),
        vec![vec![module("a"), module("b"), module("c")]]
    );
}

#[test]
fn paths_resolve_to_the_deepest_module_file() {
    let module = |path: &str| -> Module { path.split("::").map(str::to_owned).collect() };
    let known: BTreeSet<Module> = ["a", "a::b", "c"].map(module).into();
    let words = |path: &str| -> Vec<String> { path.split("::").map(str::to_owned).collect() };
    let none = BTreeSet::new();
    let children = BTreeSet::from(["b".to_owned()]);
    assert_eq!(
        resolve(&module("c"), &words("crate::a::b::Item"), &known, &none),
        Some(module("a::b"))
    );
    assert_eq!(
        resolve(&module("c"), &words("crate::a::Item"), &known, &none),
        Some(module("a"))
    );
    assert_eq!(
        resolve(&module("a::b"), &words("super::Item"), &known, &none),
        Some(module("a"))
    );
    assert_eq!(
        resolve(&module("a"), &words("b::Item"), &known, &children),
        Some(module("a::b"))
    );
    assert_eq!(
        resolve(&module("a"), &words("serde::Serialize"), &known, &children),
        None
    );
}
