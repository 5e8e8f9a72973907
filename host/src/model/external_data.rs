//! A tenant's model file may not point outside itself.
//!
//! ONNX lets a tensor keep its data in another file (`data_location = EXTERNAL`, with
//! `external_data` naming the file, offset and length). Engines read such files next
//! to the model, or — for a model handed over as bytes, as runinfer does — in the
//! process's working directory (onnxruntime does; it only refuses paths that climb
//! out of it). A tenant's model could then read the host's files into its weights and
//! out through its inferences. So every tensor of the file is looked at before an
//! engine sees it — initializers, sparse initializers, tensors in node attributes,
//! subgraphs, functions, training graphs — and any external data is refused.
//!
//! Only the fields needed are decoded (prost skips the others, weights included,
//! without copying them).

use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct Model {
    #[prost(message, optional, tag = "7")]
    graph: Option<Graph>,
    #[prost(message, repeated, tag = "20")]
    training_info: Vec<TrainingInfo>,
    #[prost(message, repeated, tag = "25")]
    functions: Vec<Function>,
}

#[derive(Clone, PartialEq, Message)]
struct TrainingInfo {
    #[prost(message, optional, tag = "1")]
    initialization: Option<Graph>,
    #[prost(message, optional, tag = "2")]
    algorithm: Option<Graph>,
}

#[derive(Clone, PartialEq, Message)]
struct Function {
    #[prost(message, repeated, tag = "7")]
    node: Vec<Node>,
}

#[derive(Clone, PartialEq, Message)]
struct Graph {
    #[prost(message, repeated, tag = "1")]
    node: Vec<Node>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<Tensor>,
    #[prost(message, repeated, tag = "15")]
    sparse_initializer: Vec<Sparse>,
}

#[derive(Clone, PartialEq, Message)]
struct Node {
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<Attribute>,
}

#[derive(Clone, PartialEq, Message)]
struct Attribute {
    #[prost(message, optional, tag = "5")]
    t: Option<Tensor>,
    #[prost(message, optional, tag = "6")]
    g: Option<Graph>,
    #[prost(message, repeated, tag = "10")]
    tensors: Vec<Tensor>,
    #[prost(message, repeated, tag = "11")]
    graphs: Vec<Graph>,
    #[prost(message, optional, tag = "22")]
    sparse_tensor: Option<Sparse>,
    #[prost(message, repeated, tag = "23")]
    sparse_tensors: Vec<Sparse>,
}

#[derive(Clone, PartialEq, Message)]
struct Sparse {
    #[prost(message, optional, tag = "1")]
    values: Option<Tensor>,
    #[prost(message, optional, tag = "2")]
    indices: Option<Tensor>,
}

#[derive(Clone, PartialEq, Message)]
struct Tensor {
    #[prost(string, tag = "8")]
    name: String,
    #[prost(message, repeated, tag = "13")]
    external_data: Vec<Entry>,
    #[prost(int32, optional, tag = "14")]
    data_location: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct Entry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// The tensors of a sparse tensor.
fn sparse_parts(sparse: &Sparse) -> impl Iterator<Item = &Tensor> {
    sparse.values.iter().chain(&sparse.indices)
}

/// `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: i32 = 1;

/// Refuses a model any of whose tensors keeps its data outside the file.
pub(crate) fn check(bytes: &[u8]) -> Result<(), String> {
    let model = Model::decode(bytes).map_err(|e| format!("not a readable ONNX model: {e}"))?;
    let mut graphs: Vec<&Graph> = model.graph.iter().collect();
    for info in &model.training_info {
        graphs.extend(info.initialization.iter().chain(&info.algorithm));
    }
    let mut tensors: Vec<&Tensor> = Vec::new();
    let mut attributes: Vec<&Attribute> = model
        .functions
        .iter()
        .flat_map(|f| &f.node)
        .flat_map(|n| &n.attribute)
        .collect();
    // Depth is bounded by prost's recursion limit on decoding.
    loop {
        if let Some(graph) = graphs.pop() {
            tensors.extend(&graph.initializer);
            tensors.extend(graph.sparse_initializer.iter().flat_map(sparse_parts));
            attributes.extend(graph.node.iter().flat_map(|n| &n.attribute));
        } else if let Some(attribute) = attributes.pop() {
            tensors.extend(attribute.t.iter().chain(&attribute.tensors));
            tensors.extend(
                attribute
                    .sparse_tensor
                    .iter()
                    .chain(&attribute.sparse_tensors)
                    .flat_map(sparse_parts),
            );
            graphs.extend(attribute.g.iter().chain(&attribute.graphs));
        } else {
            break;
        }
    }
    match tensors
        .iter()
        .find(|t| t.data_location == Some(EXTERNAL) || !t.external_data.is_empty())
    {
        None => Ok(()),
        Some(tensor) => {
            let location = tensor
                .external_data
                .iter()
                .find(|e| e.key == "location")
                .map_or("", |e| e.value.as_str());
            Err(format!(
                "tensor `{}` keeps its data in another file ({:?}); runinfer loads only models whose weights are inside the model file (save it without external data, e.g. onnx.save(model, path, save_as_external_data=False))",
                crate::untrusted::guest_text(&tensor.name),
                crate::untrusted::guest_text(location),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, location: Option<&str>) -> Tensor {
        Tensor {
            name: name.into(),
            external_data: location
                .map(|l| {
                    vec![Entry {
                        key: "location".into(),
                        value: l.into(),
                    }]
                })
                .unwrap_or_default(),
            data_location: location.map(|_| EXTERNAL),
        }
    }

    fn graph(initializer: Vec<Tensor>, node: Vec<Node>) -> Graph {
        Graph {
            node,
            initializer,
            sparse_initializer: vec![],
        }
    }

    fn model(graph: Graph) -> Vec<u8> {
        Model {
            graph: Some(graph),
            training_info: vec![],
            functions: vec![],
        }
        .encode_to_vec()
    }

    #[test]
    fn embedded_weights_pass_and_external_data_is_refused_wherever_it_hides() {
        let iris = include_bytes!("../../../plugins/iris/models/iris.onnx");
        assert_eq!(check(iris), Ok(()));
        let plain = model(graph(vec![tensor("w", None)], vec![]));
        assert_eq!(check(&plain), Ok(()));

        let direct = model(graph(vec![tensor("w", Some("Cargo.toml"))], vec![]));
        let error = check(&direct).unwrap_err();
        assert!(
            error.contains("tensor `w` keeps its data in another file (\"Cargo.toml\")"),
            "{error}"
        );

        // In a constant of a node of a subgraph of an If.
        let constant = Node {
            attribute: vec![Attribute {
                t: Some(tensor("c", Some("secrets"))),
                ..Default::default()
            }],
        };
        let branch = Node {
            attribute: vec![Attribute {
                g: Some(graph(vec![], vec![constant])),
                ..Default::default()
            }],
        };
        let nested = model(graph(vec![], vec![branch]));
        assert!(check(&nested).unwrap_err().contains("tensor `c`"));

        assert!(check(b"\xff\xff not a model").is_err());
    }
}
