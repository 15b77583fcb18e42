/// A first-in first-out queue that does not shift its elements on every removal. A removed element
/// is released at once (its slot is cleared), not when the storage is next compacted.
struct FIFO<Element> {
    private var items: [Element?] = []
    private var head = 0

    var count: Int { items.count - head }
    var isEmpty: Bool { count == 0 }
    var first: Element? { head < items.count ? items[head] : nil }

    mutating func append(_ item: Element) { items.append(item) }

    mutating func popFirst() -> Element? {
        guard head < items.count else { return nil }
        let item = items[head]
        items[head] = nil
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 64 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        return item
    }

    /// Puts an element back at the front (it was taken and could not be used).
    mutating func prepend(_ item: Element) {
        if head > 0 {
            head -= 1
            items[head] = item
        } else {
            items.insert(item, at: 0)
        }
    }

    mutating func removeAll(where shouldRemove: (Element) -> Bool) {
        items = items[head...].filter { !shouldRemove($0!) }
        head = 0
    }
}
