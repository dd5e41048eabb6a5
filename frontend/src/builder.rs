//! A small builder that writes real ONNX models.
//!
//! Tests across the workspace use it to make models in place instead of checking in binary `.onnx`
//! files; users can use it for quick experiments. It writes what an ONNX exporter writes (typed graph
//! inputs and outputs, initializers in `raw_data`, an `opset_import` per domain), and nothing more: it
//! does no validation beyond checking that tensor data fits its shape.
//!
//! ```
//! use kiln_frontend::builder::{attr, elem, DimSpec, ModelBuilder};
//!
//! let mut b = ModelBuilder::new("tiny");
//! b.input_sym("x", elem::FLOAT, &[DimSpec::Param("N"), DimSpec::Value(4)])
//!     .initializer_f32("w", &[4, 2], &[0.5; 8])
//!     .node("MatMul", &["x", "w"], &["h"], vec![])
//!     .node("Softmax", &["h"], &["y"], vec![attr::int("axis", -1)])
//!     .output("y", elem::FLOAT, &[-1, 2]);
//! let bytes: Vec<u8> = b.to_bytes();
//! assert!(!bytes.is_empty());
//! ```

use prost::Message;

use crate::onnx::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// ONNX element type codes (`TensorProto.DataType`), as stored in `elem_type` and `data_type` fields.
pub mod elem {
    use crate::onnx::tensor_proto::DataType;

    /// 32-bit IEEE float.
    pub const FLOAT: i32 = DataType::Float as i32;
    /// Unsigned 8-bit integer.
    pub const UINT8: i32 = DataType::Uint8 as i32;
    /// Signed 8-bit integer.
    pub const INT8: i32 = DataType::Int8 as i32;
    /// Unsigned 16-bit integer.
    pub const UINT16: i32 = DataType::Uint16 as i32;
    /// Signed 16-bit integer.
    pub const INT16: i32 = DataType::Int16 as i32;
    /// Signed 32-bit integer.
    pub const INT32: i32 = DataType::Int32 as i32;
    /// Signed 64-bit integer.
    pub const INT64: i32 = DataType::Int64 as i32;
    /// UTF-8 string.
    pub const STRING: i32 = DataType::String as i32;
    /// Boolean, one byte per element.
    pub const BOOL: i32 = DataType::Bool as i32;
    /// 16-bit IEEE float.
    pub const FLOAT16: i32 = DataType::Float16 as i32;
    /// 64-bit IEEE float.
    pub const DOUBLE: i32 = DataType::Double as i32;
    /// Unsigned 32-bit integer.
    pub const UINT32: i32 = DataType::Uint32 as i32;
    /// Unsigned 64-bit integer.
    pub const UINT64: i32 = DataType::Uint64 as i32;
    /// Complex number of two 32-bit floats.
    pub const COMPLEX64: i32 = DataType::Complex64 as i32;
    /// Complex number of two 64-bit floats.
    pub const COMPLEX128: i32 = DataType::Complex128 as i32;
    /// bfloat16: 8 exponent bits, 7 mantissa bits.
    pub const BFLOAT16: i32 = DataType::Bfloat16 as i32;
    /// 8-bit float E4M3, finite only.
    pub const FLOAT8E4M3FN: i32 = DataType::Float8e4m3fn as i32;
    /// 8-bit float E4M3, finite only, no negative zero.
    pub const FLOAT8E4M3FNUZ: i32 = DataType::Float8e4m3fnuz as i32;
    /// 8-bit float E5M2.
    pub const FLOAT8E5M2: i32 = DataType::Float8e5m2 as i32;
    /// 8-bit float E5M2, finite only, no negative zero.
    pub const FLOAT8E5M2FNUZ: i32 = DataType::Float8e5m2fnuz as i32;
    /// Unsigned 4-bit integer, two per byte.
    pub const UINT4: i32 = DataType::Uint4 as i32;
    /// Signed 4-bit integer, two per byte.
    pub const INT4: i32 = DataType::Int4 as i32;
    /// 4-bit float E2M1, two per byte.
    pub const FLOAT4E2M1: i32 = DataType::Float4e2m1 as i32;
    /// 8-bit float E8M0: an exponent only, used as a scale.
    pub const FLOAT8E8M0: i32 = DataType::Float8e8m0 as i32;
}

/// One dimension of a graph input or output type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DimSpec<'a> {
    /// A fixed size (`dim_value`).
    Value(i64),
    /// A symbolic size (`dim_param`), such as `"N"`.
    Param(&'a str),
    /// Neither: the dimension exists but its size is unknown.
    Unknown,
}

/// Builds an ONNX [`ModelProto`] with one graph.
///
/// Graph-level methods take `&mut self` and return `&mut Self` so calls chain; [`opset`](Self::opset)
/// and [`ir_version`](Self::ir_version) take `self` so they chain on [`new`](Self::new). Items keep
/// the order they were added in.
#[derive(Debug, Clone)]
pub struct ModelBuilder {
    ir_version: i64,
    opsets: Vec<(String, i64)>,
    graph_name: String,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    value_infos: Vec<ValueInfoProto>,
    initializers: Vec<TensorProto>,
    nodes: Vec<NodeProto>,
}

impl ModelBuilder {
    /// IR version written by default (ONNX 1.14+).
    pub const DEFAULT_IR_VERSION: i64 = 9;
    /// Version of the default ONNX operator set imported by default.
    pub const DEFAULT_OPSET: i64 = 17;

    /// An empty model whose graph is named `graph_name`, at IR version 9, importing opset 17 of the
    /// default domain.
    pub fn new(graph_name: &str) -> Self {
        Self {
            ir_version: Self::DEFAULT_IR_VERSION,
            opsets: vec![(String::new(), Self::DEFAULT_OPSET)],
            graph_name: graph_name.to_owned(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            value_infos: Vec::new(),
            initializers: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// Imports `version` of the operator set `domain` (`""` is the default ONNX domain), replacing any
    /// version already imported for that domain.
    pub fn opset(mut self, domain: &str, version: i64) -> Self {
        match self.opsets.iter_mut().find(|(d, _)| d == domain) {
            Some(entry) => entry.1 = version,
            None => self.opsets.push((domain.to_owned(), version)),
        }
        self
    }

    /// Sets the model's `ir_version`.
    pub fn ir_version(mut self, version: i64) -> Self {
        self.ir_version = version;
        self
    }

    /// Adds a graph input: a tensor of `elem_type` (see [`elem`]) and shape `dims`, where a negative
    /// dimension is unknown (no `dim_value`).
    pub fn input(&mut self, name: &str, elem_type: i32, dims: &[i64]) -> &mut Self {
        self.inputs
            .push(value_info(name, elem_type, &dims_to_specs(dims)));
        self
    }

    /// Adds a graph input whose dimensions may be symbolic.
    pub fn input_sym(&mut self, name: &str, elem_type: i32, dims: &[DimSpec<'_>]) -> &mut Self {
        self.inputs.push(value_info(name, elem_type, dims));
        self
    }

    /// Adds a graph output; dimensions as in [`input`](Self::input).
    pub fn output(&mut self, name: &str, elem_type: i32, dims: &[i64]) -> &mut Self {
        self.outputs
            .push(value_info(name, elem_type, &dims_to_specs(dims)));
        self
    }

    /// Adds a graph output whose dimensions may be symbolic.
    pub fn output_sym(&mut self, name: &str, elem_type: i32, dims: &[DimSpec<'_>]) -> &mut Self {
        self.outputs.push(value_info(name, elem_type, dims));
        self
    }

    /// Records the type of an intermediate value (`GraphProto.value_info`).
    pub fn value_info(&mut self, name: &str, elem_type: i32, dims: &[DimSpec<'_>]) -> &mut Self {
        self.value_infos.push(value_info(name, elem_type, dims));
        self
    }

    /// Adds an `f32` initializer stored in `raw_data`.
    ///
    /// # Panics
    /// If `data.len()` is not the product of `dims`, or a dimension is negative.
    pub fn initializer_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> &mut Self {
        self.initializer(tensor_f32(name, dims, data))
    }

    /// Adds an `i64` initializer stored in `raw_data`.
    ///
    /// # Panics
    /// If `data.len()` is not the product of `dims`, or a dimension is negative.
    pub fn initializer_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) -> &mut Self {
        self.initializer(tensor_i64(name, dims, data))
    }

    /// Adds an initializer as given; it must carry a name.
    pub fn initializer(&mut self, t: TensorProto) -> &mut Self {
        self.initializers.push(t);
        self
    }

    /// Adds a node of the default domain, named `{op_type}_{index}` where `index` counts the nodes
    /// added before it.
    pub fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> &mut Self {
        let name = format!("{op_type}_{}", self.nodes.len());
        self.node_named(&name, "", op_type, inputs, outputs, attrs)
    }

    /// Adds a node with an explicit name and domain (`""` is the default ONNX domain). An empty string
    /// in `inputs` marks an omitted optional input, as in ONNX.
    pub fn node_named(
        &mut self,
        name: &str,
        domain: &str,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> &mut Self {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: outputs.iter().map(|s| (*s).to_owned()).collect(),
            name: Some(name.to_owned()),
            op_type: Some(op_type.to_owned()),
            // Exporters leave the field out for the default domain; do the same.
            domain: (!domain.is_empty()).then(|| domain.to_owned()),
            attribute: attrs,
            ..Default::default()
        });
        self
    }

    /// The graph alone, for use as a subgraph attribute (see [`attr::graph`]).
    pub fn build_graph(&self) -> GraphProto {
        GraphProto {
            node: self.nodes.clone(),
            name: Some(self.graph_name.clone()),
            initializer: self.initializers.clone(),
            input: self.inputs.clone(),
            output: self.outputs.clone(),
            value_info: self.value_infos.clone(),
            ..Default::default()
        }
    }

    /// The model.
    pub fn build(&self) -> ModelProto {
        ModelProto {
            ir_version: Some(self.ir_version),
            opset_import: self
                .opsets
                .iter()
                .map(|(domain, version)| OperatorSetIdProto {
                    domain: Some(domain.clone()),
                    version: Some(*version),
                })
                .collect(),
            producer_name: Some("kiln-frontend builder".to_owned()),
            graph: Some(self.build_graph()),
            ..Default::default()
        }
    }

    /// The model, serialized: the contents of a `.onnx` file.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.build().encode_to_vec()
    }
}

/// A `ValueInfoProto` describing a tensor of `elem_type` (see [`elem`]) and shape `dims`.
pub fn value_info(name: &str, elem_type: i32, dims: &[DimSpec<'_>]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(tensor_type(elem_type, dims)),
        ..Default::default()
    }
}

/// A tensor `TypeProto` of `elem_type` (see [`elem`]) and shape `dims`.
pub fn tensor_type(elem_type: i32, dims: &[DimSpec<'_>]) -> TypeProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: match *d {
                DimSpec::Value(n) => Some(tensor_shape_proto::dimension::Value::DimValue(n)),
                DimSpec::Param(p) => {
                    Some(tensor_shape_proto::dimension::Value::DimParam(p.to_owned()))
                }
                DimSpec::Unknown => None,
            },
            denotation: None,
        })
        .collect();
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(elem_type),
            shape: Some(TensorShapeProto { dim }),
        })),
        denotation: None,
    }
}

fn dims_to_specs(dims: &[i64]) -> Vec<DimSpec<'static>> {
    dims.iter()
        .map(|&d| {
            if d < 0 {
                DimSpec::Unknown
            } else {
                DimSpec::Value(d)
            }
        })
        .collect()
}

/// A tensor of `elem_type` whose data is `raw` (little-endian element bytes, densely packed).
///
/// The length of `raw` is not checked: sub-byte types pack two elements per byte.
pub fn tensor_raw(name: &str, elem_type: i32, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(elem_type),
        name: Some(name.to_owned()),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// Panics unless `len` elements fill a tensor of shape `dims` exactly.
fn check_len(name: &str, dims: &[i64], len: usize) {
    assert!(
        dims.iter().all(|&d| d >= 0),
        "tensor {name:?}: negative dimension in {dims:?}"
    );
    let numel: i64 = dims.iter().product();
    assert_eq!(
        usize::try_from(numel).ok(),
        Some(len),
        "tensor {name:?}: shape {dims:?} does not hold {len} elements"
    );
}

/// An `f32` tensor with its data in `raw_data`.
///
/// # Panics
/// If `data.len()` is not the product of `dims`, or a dimension is negative.
pub fn tensor_f32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    check_len(name, dims, data.len());
    tensor_raw(
        name,
        elem::FLOAT,
        dims,
        data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

/// An `f16` tensor with its data in `raw_data`.
///
/// # Panics
/// If `data.len()` is not the product of `dims`, or a dimension is negative.
pub fn tensor_f16(name: &str, dims: &[i64], data: &[half::f16]) -> TensorProto {
    check_len(name, dims, data.len());
    tensor_raw(
        name,
        elem::FLOAT16,
        dims,
        data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

/// An `i64` tensor with its data in `raw_data`.
///
/// # Panics
/// If `data.len()` is not the product of `dims`, or a dimension is negative.
pub fn tensor_i64(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    check_len(name, dims, data.len());
    tensor_raw(
        name,
        elem::INT64,
        dims,
        data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

/// Constructors for node attributes, each setting the value field and the matching `type`.
pub mod attr {
    use super::{AttributeProto, AttributeType, GraphProto, TensorProto};

    fn named(name: &str, ty: AttributeType) -> AttributeProto {
        AttributeProto {
            name: Some(name.to_owned()),
            r#type: Some(ty as i32),
            ..Default::default()
        }
    }

    /// An `INT` attribute.
    pub fn int(name: &str, value: i64) -> AttributeProto {
        AttributeProto {
            i: Some(value),
            ..named(name, AttributeType::Int)
        }
    }

    /// An `INTS` attribute.
    pub fn ints(name: &str, values: &[i64]) -> AttributeProto {
        AttributeProto {
            ints: values.to_vec(),
            ..named(name, AttributeType::Ints)
        }
    }

    /// A `FLOAT` attribute.
    pub fn float(name: &str, value: f32) -> AttributeProto {
        AttributeProto {
            f: Some(value),
            ..named(name, AttributeType::Float)
        }
    }

    /// A `FLOATS` attribute.
    pub fn floats(name: &str, values: &[f32]) -> AttributeProto {
        AttributeProto {
            floats: values.to_vec(),
            ..named(name, AttributeType::Floats)
        }
    }

    /// A `STRING` attribute.
    pub fn string(name: &str, value: &str) -> AttributeProto {
        AttributeProto {
            s: Some(value.as_bytes().to_vec()),
            ..named(name, AttributeType::String)
        }
    }

    /// A `STRINGS` attribute.
    pub fn strings(name: &str, values: &[&str]) -> AttributeProto {
        AttributeProto {
            strings: values.iter().map(|s| s.as_bytes().to_vec()).collect(),
            ..named(name, AttributeType::Strings)
        }
    }

    /// A `TENSOR` attribute, such as the `value` of a `Constant` node.
    pub fn tensor(name: &str, value: TensorProto) -> AttributeProto {
        AttributeProto {
            t: Some(value),
            ..named(name, AttributeType::Tensor)
        }
    }

    /// A `GRAPH` attribute, such as the branches of `If` or the body of `Loop`.
    pub fn graph(name: &str, value: GraphProto) -> AttributeProto {
        AttributeProto {
            g: Some(value),
            ..named(name, AttributeType::Graph)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::tensor_proto::DataType;

    fn dim_values(vi: &ValueInfoProto) -> Vec<Option<tensor_shape_proto::dimension::Value>> {
        let Some(type_proto::Value::TensorType(t)) =
            vi.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            panic!("{} is not a tensor", vi.name());
        };
        t.shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| d.value.clone())
            .collect()
    }

    #[test]
    fn two_node_model_round_trips() {
        use tensor_shape_proto::dimension::Value::{DimParam, DimValue};

        let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.25).collect();
        let mut b = ModelBuilder::new("two_nodes").opset("com.example", 1);
        b.input_sym("x", elem::FLOAT, &[DimSpec::Param("N"), DimSpec::Value(4)])
            .initializer_f32("w", &[4, 3], &w)
            .initializer_i64("shape", &[2], &[-1, 3])
            .node("MatMul", &["x", "w"], &["h"], vec![])
            .node_named(
                "act",
                "com.example",
                "Softmax",
                &["h"],
                &["y"],
                vec![attr::int("axis", -1)],
            )
            .output("y", elem::FLOAT, &[-1, 3]);
        let bytes = b.to_bytes();

        let m = ModelProto::decode(bytes.as_slice()).expect("builder output decodes");
        assert_eq!(m.ir_version(), 9);
        let opsets: Vec<(&str, i64)> = m
            .opset_import
            .iter()
            .map(|o| (o.domain(), o.version()))
            .collect();
        assert_eq!(opsets, [("", 17), ("com.example", 1)]);

        let g = m.graph.as_ref().unwrap();
        assert_eq!(g.name(), "two_nodes");

        assert_eq!(g.input.len(), 1);
        assert_eq!(g.input[0].name(), "x");
        assert_eq!(
            dim_values(&g.input[0]),
            [Some(DimParam("N".into())), Some(DimValue(4))]
        );
        assert_eq!(g.output[0].name(), "y");
        assert_eq!(dim_values(&g.output[0]), [None, Some(DimValue(3))]);

        let init_w = &g.initializer[0];
        assert_eq!(init_w.name(), "w");
        assert_eq!(init_w.dims, [4, 3]);
        assert_eq!(init_w.data_type(), elem::FLOAT);
        let raw = init_w.raw_data();
        assert_eq!(raw.len(), 48);
        assert_eq!(&raw[4..8], &0.25f32.to_le_bytes());
        assert!(init_w.float_data.is_empty());
        let init_s = &g.initializer[1];
        assert_eq!((init_s.name(), init_s.data_type()), ("shape", elem::INT64));
        assert_eq!(
            init_s.raw_data(),
            [(-1i64).to_le_bytes(), 3i64.to_le_bytes()].concat()
        );

        let names: Vec<_> = g
            .node
            .iter()
            .map(|n| (n.name(), n.domain(), n.op_type()))
            .collect();
        assert_eq!(
            names,
            [
                ("MatMul_0", "", "MatMul"),
                ("act", "com.example", "Softmax")
            ]
        );
        assert_eq!(g.node[0].input, ["x", "w"]);
        assert_eq!(g.node[0].output, ["h"]);
        let axis = &g.node[1].attribute[0];
        assert_eq!(
            (axis.name(), axis.r#type(), axis.i()),
            ("axis", AttributeType::Int, -1)
        );
    }

    #[test]
    fn opset_replaces_the_version_of_a_domain() {
        let m = ModelBuilder::new("g").opset("", 13).ir_version(8).build();
        assert_eq!(m.ir_version(), 8);
        assert_eq!(m.opset_import.len(), 1);
        assert_eq!(m.opset_import[0].version(), 13);
    }

    #[test]
    fn attributes_carry_their_type() {
        let cases = [
            (attr::ints("perm", &[1, 0]), AttributeType::Ints),
            (attr::float("alpha", 0.5), AttributeType::Float),
            (attr::floats("scales", &[1.0, 2.0]), AttributeType::Floats),
            (attr::string("mode", "nearest"), AttributeType::String),
            (attr::strings("dirs", &["forward"]), AttributeType::Strings),
            (
                attr::tensor("value", tensor_i64("", &[], &[7])),
                AttributeType::Tensor,
            ),
            (
                attr::graph("body", ModelBuilder::new("body").build_graph()),
                AttributeType::Graph,
            ),
        ];
        for (a, ty) in cases {
            let decoded = AttributeProto::decode(a.encode_to_vec().as_slice()).unwrap();
            assert_eq!(decoded.r#type(), ty, "{}", a.name());
            assert_eq!(decoded, a);
        }
    }

    #[test]
    #[should_panic(expected = "does not hold 5 elements")]
    fn tensor_data_must_fill_its_shape() {
        tensor_f32("bad", &[2, 2], &[0.0; 5]);
    }

    /// Round trips cannot catch a wrong field number, so decode bytes assembled by hand from the ONNX
    /// wire format: key = field_number << 3 | wire_type (0 varint, 2 length-delimited, 5 fixed32).
    #[test]
    fn field_numbers_match_the_onnx_wire_format() {
        let tensor = [
            0x08, 0x02, // dims (1) = 2
            0x10, 0x01, // data_type (2) = FLOAT
            0x22, 0x08, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, // float_data (4), packed: 1.0, 2.0
            0x42, 0x01, b'w', // name (8)
            0x4a, 0x02, 0xab, 0xcd, // raw_data (9)
            0x52, 0x08, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // double_data (10), packed: 1.0
            0x70, 0x01, // data_location (14) = EXTERNAL
        ];
        let t = TensorProto::decode(&tensor[..]).unwrap();
        assert_eq!(t.dims, [2]);
        assert_eq!(t.data_type, Some(DataType::Float as i32));
        assert_eq!(t.float_data, [1.0, 2.0]);
        assert_eq!(t.name(), "w");
        assert_eq!(t.raw_data(), [0xab, 0xcd]);
        assert_eq!(t.double_data, [1.0]);
        assert_eq!(
            t.data_location(),
            crate::onnx::tensor_proto::DataLocation::External
        );

        let int64s = [0x3a, 0x02, 0x05, 0x07, 0x58, 0x09]; // int64_data (7) packed [5, 7]; uint64_data (11) = 9
        let t = TensorProto::decode(&int64s[..]).unwrap();
        assert_eq!(
            (t.int64_data.as_slice(), t.uint64_data.as_slice()),
            (&[5i64, 7][..], &[9u64][..])
        );

        let attribute = [
            0x0a, 0x01, b'k', // name (1)
            0x18, 0x03, // i (3) = 3
            0xa0, 0x01, 0x02, // type (20) = INT, a two-byte key
        ];
        let a = AttributeProto::decode(&attribute[..]).unwrap();
        assert_eq!((a.name(), a.i(), a.r#type()), ("k", 3, AttributeType::Int));

        let model = [
            0x08, 0x09, // ir_version (1) = 9
            0x42, 0x02, 0x10, 0x11, // opset_import (8) { version (2) = 17 }
            0x3a, 0x03, 0x12, 0x01, b'g', // graph (7) { name (2) = "g" }
        ];
        let m = ModelProto::decode(&model[..]).unwrap();
        assert_eq!(m.ir_version(), 9);
        assert_eq!(m.opset_import[0].version(), 17);
        assert_eq!(m.graph.unwrap().name(), "g");

        let dim = [0x0a, 0x03, 0x12, 0x01, b'N']; // TensorShapeProto { dim (1) { dim_param (2) = "N" } }
        let s = TensorShapeProto::decode(&dim[..]).unwrap();
        assert_eq!(
            s.dim[0].value,
            Some(tensor_shape_proto::dimension::Value::DimParam("N".into()))
        );
    }
}
