/// Every problem with an input or output — a checkpoint, an image, a label map, a tokenizer
/// file, a folder — worded for a one-line error message that names the path and what is wrong
/// with it. One type for every layer, so a command prints them all the same way.
public struct FileError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let problem: String

    public init(_ path: String, _ problem: String) {
        self.path = path
        self.problem = problem
    }

    public var description: String { "\(path): \(problem)" }
}
