import ArgumentParser
import DGCheckpoint
import DGDiffusion
import DGModels
import DGTensor
import Foundation

struct Parity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check this implementation against reference outputs dumped from diffusers / transformers.",
        discussion: """
        FIXTURE_DIR holds (names are free, kinds are detected): a diffusers pipeline folder (model_index.json), \
        optionally a diffusers ControlNet folder, optionally the same models as original single files (LDM \
        layout, ControlNet layout; .safetensors, or torch.save .ckpt / .pth / .pt), `io.safetensors` with the reference inputs and outputs, `prompts.json`, \
        and optionally `unet_step_grads.safetensors` / `controlnet_step_grads.safetensors`. See \
        Tests/Fixtures/README.md for every tensor name. Each check prints its max abs error and relative \
        error ||ours - reference|| / ||reference||; the exit status is 0 only if all pass.
        Tolerance: 2e-5 relative for every float comparison (forwards, schedules, one training step's loss \
        and gradients, the 4-step sampling run): float32 summed in another order than PyTorch's measures \
        ~1e-6 on the fixtures, and a real mistake shows as 1e-3 or worse. Token ids, timesteps and the \
        one-hot condition must be exact.
        """)

    @Argument(help: "The fixture folder (layout of Tests/Fixtures/sd-tiny).")
    var fixture: String

    @Option(help: "f32, or bf16: weights held in bf16 and products in bf16 (where the CPU has AVX512-BF16), forwards and the sampling run checked against the same f32 references at 5e-2 relative; no gradient checks.")
    var dtype: DType = .f32

    func validate() throws {
        guard [.f32, .bf16].contains(dtype) else { throw ValidationError("--dtype must be f32 or bf16") }
    }

    func run() throws {
        if dtype == .bf16 { emit(GEMM.bf16 ? "bf16 weights, bf16 products (vdpbf16ps)" : "bf16 weights widened to f32, f32 products (GEMM.bf16 off here: see DGINSTYLE_BF16)") }
        let report = try ParityRun(fixture: fixture, dtype: dtype).run { emit($0.line) }
        let failed = report.filter { !$0.passed }
        emit("\(report.count - failed.count) passed, \(failed.count) failed")
        if !failed.isEmpty { throw ExitCode(1) }
    }
}
