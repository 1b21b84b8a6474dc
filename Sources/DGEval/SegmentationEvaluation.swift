import DGBase
import DGData
import DGTensor
import Foundation

/// Runs a segmenter over a labelled set, image by image at full size, and counts the confusion.
public enum SegmentationEvaluation {
    /// `predictions`: a folder for each image's predicted classes in palette colours
    /// (`<image name>.png`), written only after every input has been checked.
    /// `perImage`: also each image's own matrix, named like the image.
    public static func evaluate(_ model: Segmenter, data: SegmentationData, predictions: String? = nil, perImage: Bool = false,
                                progress: Bool = false) throws -> (confusion: ConfusionMatrix, images: Int,
                                                                   perImage: [(name: String, confusion: ConfusionMatrix)]) {
        try data.checkSizes()
        if let predictions {
            do { try FileManager.default.createDirectory(atPath: predictions, withIntermediateDirectories: true) } catch {
                throw FileError(predictions, "cannot create: \(error.localizedDescription)")
            }
        }
        var confusion = ConfusionMatrix(classes: model.config.numClasses)
        var images: [(name: String, confusion: ConfusionMatrix)] = []
        let bar = ProgressBar("segment eval", total: Double(data.samples.count), unit: "img", enabled: progress)
        // A failure midway (a label id out of range) takes back the predictions already written.
        var written: [String] = []
        func removeWritten() { for p in written { unlink(p) } }
        for (i, sample) in data.samples.enumerated() {
            let image: Image, labels: LabelMap
            do { (image, labels) = try SegmentationData.load(sample, classes: model.config.numClasses) } catch {
                removeWritten()
                throw error
            }
            let predicted = model.predict(image.tensor())
            var own = ConfusionMatrix(classes: model.config.numClasses)
            own.add(truth: labels.ids, predicted: predicted)
            confusion.add(own)
            if perImage { images.append((URL(fileURLWithPath: sample.imagePath).lastPathComponent, own)) }
            if let predictions {
                let name = URL(fileURLWithPath: sample.imagePath).lastPathComponent
                let colours = Cityscapes.colorize(LabelMap(width: image.width, height: image.height, ids: predicted))
                do { try PNG.write(colours, to: predictions + "/" + name, fast: true, durable: false) } catch {
                    removeWritten()
                    throw error
                }
                written.append(predictions + "/" + name)
            }
            bar.update(Double(i + 1))
        }
        bar.finish()
        return (confusion, data.samples.count, images)
    }
}
