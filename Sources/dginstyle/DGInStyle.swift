import ArgumentParser
import Foundation

@main
struct DGInStyle: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dginstyle",
        abstract: "Convert, fine-tune and sample Stable Diffusion 1.5 + ControlNet for DGInStyle data generation.",
        subcommands: [Inspect.self, Convert.self, Diff.self, Parity.self, SynthCommand.self, InitPipeline.self, TrainVAE.self, FinetuneUNet.self, TrainControlNet.self,
                      Assemble.self, RecipeCommand.self, LoRACommand.self,
                      Sample.self, GenFile.self, Generate.self, Status.self, Swap.self, Demo.self, Measure.self, Segment.self, Bench.self])
}

/// Prints to standard output in one write (progress bars share the terminal on stderr).
func emit(_ text: String) {
    FileHandle.standardOutput.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
}

func warn(_ text: String) {
    FileHandle.standardError.write(Data("warning: \(text)\n".utf8))
}
