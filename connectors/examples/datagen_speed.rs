fn main() {
    let t = std::time::Instant::now();
    let mut rows = 0;
    for sb in quiver_connectors::Datagen::new(quiver_connectors::DatagenConfig::default()).unwrap() {
        rows += sb.batch.num_rows();
    }
    println!("{rows} rows in {:?}", t.elapsed());
}
