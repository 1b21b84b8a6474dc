import DGTensor

/// Gradient checkpointing: runs `body` without recording, keeping only its inputs; during
/// backward it runs `body` again, recording, and back-propagates through that local graph.
/// Activations inside `body` are thus never held between forward and backward, at the cost of
/// a second forward. Parameters used inside receive their gradients during the recomputation.
public func checkpointed(_ inputs: [Var], _ body: @escaping ([Var]) -> [Var]) -> [Var] {
    guard Autograd.recording else { return body(inputs) }
    let values = inputs.map(\.value)
    let autocast = Autocast.bf16
    let outputs = Autograd.noGrad { body(inputs.map { Var($0.value) }) }
    // One node for the whole block, created before the nodes of its outputs so that, in
    // reverse creation order, it runs after all of them have delivered their gradients.
    let box = GradientBox()
    let block = Node(inputs: inputs.map(\.node), backward: { _, need in
        var inputGrads = [Tensor?](repeating: nil, count: values.count)
        Autograd.withGrad { Autocast.bf16(autocast) {
            let leaves = values.enumerated().map { i, v in
                need[i] ? Var.leaf(v) { g in inputGrads[i] = inputGrads[i].map { Kernels.add($0, g) } ?? g } : Var(v)
            }
            let again = body(leaves)
            let roots = zip(again, box.grads).compactMap { v, g in g.map { (v, $0) } }
            Autograd.backward(roots)
        } }
        return inputGrads
    })
    box.grads = [Tensor?](repeating: nil, count: outputs.count)
    return outputs.enumerated().map { i, out in
        Var(out.value, node: Node(inputs: [block], backward: { g, _ in
            box.grads[i] = box.grads[i].map { Kernels.add($0, g) } ?? g
            return [Tensor(zeros: [])]  // only tells the block node it has work to do
        }))
    }
}

final class GradientBox {
    var grads: [Tensor?] = []
}
