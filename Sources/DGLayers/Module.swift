import DGAutograd
import DGTensor

/// A node of a model. Children and parameters are discovered from stored properties by
/// reflection, so a property's name *is* its state-dict key: `let conv_in: Conv2d` yields
/// `conv_in.weight`, `let down_blocks: [Module]` yields `down_blocks.0...`. Optional
/// properties that are nil are skipped. This keeps every key exactly as diffusers names it.
open class Module {
    public init() {}

    /// Every parameter below this module, in declaration order, with its full dotted key.
    public func namedParameters() -> [(name: String, parameter: Parameter)] {
        var result: [(String, Parameter)] = []
        collect(into: &result, prefix: "")
        return result
    }

    /// The direct children, in declaration order.
    public func namedChildren() -> [(name: String, module: Module)] {
        var result: [(String, Module)] = []
        visitFields { name, value in
            if let m = value as? Module { result.append((name, m)) }
        }
        return result
    }

    public var parameterCount: Int { namedParameters().reduce(0) { $0 + $1.parameter.count } }

    /// Drops every parameter's value, for a model that has done its work in a process that goes
    /// on (the text encoder of a one-prompt `sample`): owned weights are freed, and the pages of
    /// weights viewed in a file map are given back. The model cannot run afterwards.
    public func releaseWeights() {
        for (_, p) in namedParameters() {
            p.value?.storage.releaseMappedPages()
            p.value = nil
        }
    }

    /// Stores every floating-point parameter as `dtype` (bf16: the weights the bf16 products read
    /// as they are; values change only by that rounding). A parameter held in 16 bits is frozen
    /// (`Parameter.v`: only float32 parameters train).
    public func storeParameters(as dtype: DType) {
        for (_, p) in namedParameters() {
            guard let v = p.value, v.dtype.isFloatingPoint else { continue }
            if v.dtype != dtype { p.value = v.converted(to: dtype) }
            if dtype != .f32 { p.requiresGrad = false; p.grad = nil }
        }
    }

    private func collect(into out: inout [(String, Parameter)], prefix: String) {
        visitFields { name, value in
            let key = prefix + name
            if let p = value as? Parameter { out.append((key, p)) } else if let m = value as? Module {
                m.collect(into: &out, prefix: key + ".")
            }
        }
    }

    /// Calls `body` with (key, Parameter-or-Module) for every field, arrays expanded by index.
    private func visitFields(_ body: (String, AnyObject) -> Void) {
        var mirrors: [Mirror] = []
        var m: Mirror? = Mirror(reflecting: self)
        while let current = m { mirrors.insert(current, at: 0); m = current.superclassMirror }
        for mirror in mirrors {
            for child in mirror.children {
                guard let label = child.label else { continue }
                Module.visit(label, child.value, body)
            }
        }
    }

    private static func visit(_ key: String, _ value: Any, _ body: (String, AnyObject) -> Void) {
        if let p = value as? Parameter { body(key, p); return }
        if let m = value as? Module { body(key, m); return }
        let mirror = Mirror(reflecting: value)
        switch mirror.displayStyle {
        case .optional:
            if let wrapped = mirror.children.first { visit(key, wrapped.value, body) }
        case .collection:
            for (i, element) in mirror.children.enumerated() { visit("\(key).\(i)", element.value, body) }
        default:
            break
        }
    }
}
