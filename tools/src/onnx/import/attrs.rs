//! Reading a node's attributes by name, with ONNX's defaults left to the caller.

use tract_onnx::pb::{AttributeProto, NodeProto};

fn find<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// An integer attribute.
pub fn int(node: &NodeProto, name: &str) -> Option<i64> {
    find(node, name).map(|a| a.i)
}

/// A float attribute.
pub fn float(node: &NodeProto, name: &str) -> Option<f32> {
    find(node, name).map(|a| a.f)
}

/// A list-of-integers attribute.
pub fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    find(node, name).map(|a| a.ints.clone())
}

/// A string attribute.
pub fn string(node: &NodeProto, name: &str) -> Option<String> {
    find(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// The name a node goes by in messages: its own, or its first output's.
pub fn node_name(node: &NodeProto) -> String {
    if !node.name.is_empty() {
        node.name.clone()
    } else {
        node.output.first().cloned().unwrap_or_default()
    }
}

/// Input `i` of `node`, `None` when absent or left empty (an omitted optional input).
pub fn input(node: &NodeProto, i: usize) -> Option<&str> {
    node.input
        .get(i)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}
