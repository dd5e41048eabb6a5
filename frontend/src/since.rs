//! The opset in which each mapped default-domain op first appeared (from the ONNX operator
//! registry, onnx 1.23): a model importing an older opset cannot use the op.

/// First opset version of `op_type`, or `None` if kiln does not know the op.
pub(crate) fn since_version(op_type: &str) -> Option<i64> {
    Some(match op_type {
        "Abs"
        | "Add"
        | "And"
        | "ArgMax"
        | "ArgMin"
        | "AveragePool"
        | "BatchNormalization"
        | "Cast"
        | "Ceil"
        | "Clip"
        | "Concat"
        | "Constant"
        | "Conv"
        | "ConvTranspose"
        | "DepthToSpace"
        | "Div"
        | "Dropout"
        | "Elu"
        | "Equal"
        | "Exp"
        | "Flatten"
        | "Floor"
        | "Gather"
        | "Gemm"
        | "GlobalAveragePool"
        | "GlobalLpPool"
        | "GlobalMaxPool"
        | "Greater"
        | "HardSigmoid"
        | "Hardmax"
        | "Identity"
        | "InstanceNormalization"
        | "LRN"
        | "LeakyRelu"
        | "Less"
        | "Log"
        | "LogSoftmax"
        | "LpNormalization"
        | "LpPool"
        | "MatMul"
        | "Max"
        | "MaxPool"
        | "Mean"
        | "Min"
        | "Mul"
        | "Neg"
        | "Not"
        | "Or"
        | "PRelu"
        | "Pad"
        | "Pow"
        | "Reciprocal"
        | "ReduceLogSum"
        | "ReduceLogSumExp"
        | "ReduceMax"
        | "ReduceMean"
        | "ReduceMin"
        | "ReduceProd"
        | "ReduceSum"
        | "ReduceSumSquare"
        | "Relu"
        | "Reshape"
        | "Selu"
        | "Shape"
        | "Sigmoid"
        | "Size"
        | "Slice"
        | "Softmax"
        | "Softplus"
        | "Softsign"
        | "SpaceToDepth"
        | "Split"
        | "Sqrt"
        | "Squeeze"
        | "Sub"
        | "Sum"
        | "Tanh"
        | "Tile"
        | "TopK"
        | "Transpose"
        | "Unsqueeze"
        | "Upsample"
        | "Xor" => 1,
        "Cos" | "Sin" | "Tan" => 7,
        "Expand" => 8,
        "ConstantOfShape"
        | "Erf"
        | "EyeLike"
        | "IsNaN"
        | "MeanVarianceNormalization"
        | "OneHot"
        | "Scatter"
        | "Sign"
        | "Where" => 9,
        "IsInf" | "Mod" | "Resize" | "ThresholdedRelu" => 10,
        "CumSum" | "GatherElements" | "GatherND" | "Range" | "Round" | "ScatterElements"
        | "ScatterND" => 11,
        "Celu" | "Einsum" | "GreaterOrEqual" | "LessOrEqual" => 12,
        "HardSwish" | "Trilu" => 14,
        "CastLike" => 15,
        "LayerNormalization" => 17,
        "GroupNormalization" | "Mish" => 18,
        "Gelu" => 20,
        "Attention" | "RMSNormalization" | "RotaryEmbedding" => 23,
        "SwiGLU" => 28,
        _ => return None,
    })
}
