import DGAutograd
import DGCheckpoint
import DGLayers

/// Compares a checkpoint's tensors with a model's parameters: missing, unexpected and
/// mis-shaped keys, each by name. Empty means they map one to one.
public func compareToModel(_ entries: [TensorEntry], _ model: Module) -> [String] {
    compareToParameters(entries, model.namedParameters())
}

/// `compareToModel` for a list of named parameters (a model's adapters, say).
public func compareToParameters(_ entries: [TensorEntry], _ parameters: [(name: String, parameter: Parameter)]) -> [String] {
    let expected = Dictionary(parameters.map { ($0.name, $0.parameter.shape) }, uniquingKeysWith: { a, _ in a })
    var found: [String: [Int]] = [:]
    for e in entries { found[canonicalParameterName(e.name, in: expected)] = e.shape }
    var problems: [String] = []
    for (name, shape) in parameters.map({ ($0.name, $0.parameter.shape) }) {
        guard let got = found[name] else { problems.append("missing \(name)"); continue }
        if got != shape { problems.append("\(name) has shape \(got), expected \(shape)") }
    }
    for e in entries where expected[canonicalParameterName(e.name, in: expected)] == nil {
        problems.append("unexpected \(e.name)")
    }
    return problems
}

/// transformers saves CLIPTextModel with or without the `text_model.` prefix depending on its
/// version; both name the same parameter.
public func canonicalParameterName(_ name: String, in expected: [String: [Int]]) -> String {
    if expected[name] != nil { return name }
    if name.hasPrefix("text_model.") {
        let stripped = String(name.dropFirst("text_model.".count))
        if expected[stripped] != nil { return stripped }
    } else if expected["text_model." + name] != nil {
        return "text_model." + name
    }
    return name
}
